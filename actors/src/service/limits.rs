//! What one client can hold of the HTTP server: a request's whole life
//! (its body arriving, the answer starting) is bounded in time, and the
//! requests in flight from one client address are bounded in number. A
//! body that trickles in a byte a second is cut off with 408 instead of
//! holding a connection (and a file descriptor) for good, and one address
//! cannot take every connection the process may open: others, and
//! `/health`, still get through.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The server's limits (`http.request_timeout`, `http.max_requests_per_client`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_timeout: Duration,
    pub per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { request_timeout: Duration::from_secs(30), per_client: 64 }
    }
}

/// Requests in flight per client address, shared by the server's workers.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One admitted request; its address's count goes down when it is dropped.
pub struct Slot {
    table: InFlight,
    ip: Option<IpAddr>,
}

impl InFlight {
    /// Admits a request from `peer` unless `max` from its address are in
    /// flight. A request without a peer address (not over TCP) is admitted.
    pub fn enter(&self, peer: Option<SocketAddr>, max: usize) -> Result<Slot, actix_web::Error> {
        let Some(ip) = peer.map(|p| p.ip()) else { return Ok(Slot { table: self.clone(), ip: None }) };
        let mut table = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = table.entry(ip).or_insert(0);
        if *n >= max {
            metrics::counter!("k2_http_refused_total", "reason" => "per_client").increment(1);
            return Err(actix_web::error::ErrorTooManyRequests(format!(
                "more than {max} requests in flight from this address (http.max_requests_per_client)"
            )));
        }
        *n += 1;
        Ok(Slot { table: self.clone(), ip: Some(ip) })
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut table = self.table.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = table.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                table.remove(&ip);
            }
        }
    }
}

/// Runs `call` (the rest of the server: routing, reading the body, the
/// handler until its answer starts) within `timeout`; past it, 408.
pub async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, actix_web::Error>>,
) -> Result<T, actix_web::Error> {
    match tokio::time::timeout(timeout, call).await {
        Ok(done) => done,
        Err(_) => {
            metrics::counter!("k2_http_refused_total", "reason" => "timeout").increment(1);
            Err(actix_web::error::ErrorRequestTimeout(format!(
                "the request was not received and answered within {timeout:?} (http.request_timeout)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_holds_at_most_its_share_and_gets_it_back() {
        let table = InFlight::default();
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let first = table.enter(Some(a), 2).unwrap();
        let _second = table.enter(Some(a), 2).unwrap();
        let refused = table.enter(Some(a), 2).map(|_| ()).unwrap_err();
        assert_eq!(refused.as_response_error().status_code(), 429);
        assert!(table.enter(Some(b), 2).is_ok(), "another address is not affected");
        drop(first);
        assert_eq!(table.count(a.ip()), 1);
        assert!(table.enter(Some(a), 2).is_ok(), "a finished request frees its slot");
    }

    #[tokio::test]
    async fn a_request_past_its_time_is_answered_408() {
        let slow = within(Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, actix_web::Error>(())
        });
        assert_eq!(slow.await.unwrap_err().as_response_error().status_code(), 408);
        assert!(within(Duration::from_secs(5), async { Ok::<_, actix_web::Error>(1) }).await.is_ok());
    }
}
