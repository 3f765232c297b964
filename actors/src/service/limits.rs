//! What one client can hold of the HTTP server: a request's whole life
//! (its body arriving, the answer starting) is bounded in time, and the
//! requests in flight and the connections open from one client address are
//! bounded in number. A body that trickles in a byte a second is cut off
//! with 408 instead of holding a connection (and a file descriptor) for
//! good, and one address cannot take every connection the process may
//! open: others, and `/health`, still get through. A URI longer than any
//! request K2 serves needs is refused with 414 before it is routed.
//! Every refusal is JSON (`{"error": ...}`) and counted in
//! `k2_http_refused_total{reason}`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::error::InternalError;
use actix_web::http::StatusCode;

/// The server's limits (`http.request_timeout`, `http.max_requests_per_client`,
/// `http.max_connections_per_client`, `http.max_uri_length`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_timeout: Duration,
    pub per_client: usize,
    pub connections_per_client: usize,
    pub connections: usize,
    pub max_uri: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            per_client: 64,
            connections_per_client: 256,
            connections: 2048,
            max_uri: 8192,
        }
    }
}

/// File descriptors kept for everything but the HTTP server's connections
/// (table files, Kafka, Redis, the catalog, logs).
const FILES_BESIDES_HTTP: u64 = 1024;

/// Raises the process's open-file limit (soft, up to the hard one) so that
/// `connections` HTTP connections and the rest fit; warns when they cannot,
/// since a process out of descriptors fails everywhere at once (`/health`
/// included) rather than at its HTTP port.
pub fn make_room_for(connections: usize) {
    let wanted = connections as u64 + FILES_BESIDES_HTTP;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit >= wanted => tracing::debug!(limit, "open-file limit"),
        Ok(limit) => tracing::warn!(
            limit,
            wanted,
            "the open-file limit is below http.max_connections plus 1024: raise the hard limit (LimitNOFILE) or lower http.max_connections"
        ),
        Err(e) => tracing::warn!(error = %e, "could not read or raise the open-file limit"),
    }
}

/// A refusal as JSON, counted under `reason`.
pub fn refusal(status: StatusCode, reason: &'static str, message: String) -> actix_web::Error {
    metrics::counter!("k2_http_refused_total", "reason" => reason).increment(1);
    let mut response = HttpResponse::build(status);
    if status == StatusCode::TOO_MANY_REQUESTS {
        // A client over its share is not kept talking on this connection.
        response.force_close();
    }
    let body = response.json(serde_json::json!({"error": message}));
    InternalError::from_response(message, body).into()
}

/// Refuses a URI longer than `max` bytes (414).
pub fn check_uri(uri: &actix_web::http::Uri, max: usize) -> Result<(), actix_web::Error> {
    let len = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if len > max {
        return Err(refusal(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the URI is {len} bytes, more than {max} (http.max_uri_length)"),
        ));
    }
    Ok(())
}

/// A count per client address, shared by the server's workers: what both
/// the connection and the request limits keep.
#[derive(Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One counted connection or request; its address's count goes down when
/// it is dropped.
pub struct Counted {
    table: PerAddress,
    ip: Option<IpAddr>,
}

impl PerAddress {
    /// Counts one more from `peer` and returns the address's count with it
    /// (0 without a peer address: not over TCP, never limited).
    fn add(&self, peer: Option<SocketAddr>) -> (Counted, usize) {
        let Some(ip) = peer.map(|p| p.ip()) else { return (Counted { table: self.clone(), ip: None }, 0) };
        let mut table = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = table.entry(ip).or_insert(0);
        *n += 1;
        let n = *n;
        drop(table);
        (Counted { table: self.clone(), ip: Some(ip) }, n)
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Counted {
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

/// Connections open per client address. Actix cannot refuse a connection
/// as it accepts it, so one past the limit is answered 429 on its first
/// request and closed; one that never sends a request is closed by the
/// server's header time-out.
#[derive(Clone, Default)]
pub struct Connections(PerAddress);

/// One open connection, kept in its extensions until it closes.
pub struct Connection {
    _counted: Counted,
    /// Whether it was within its address's share when it opened.
    pub admitted: bool,
}

impl Connections {
    /// Counts a new connection from `peer`; it is admitted while at most
    /// `max` from its address are open.
    pub fn open(&self, peer: Option<SocketAddr>, max: usize) -> Connection {
        let (counted, n) = self.0.add(peer);
        Connection { _counted: counted, admitted: n <= max }
    }
}

/// Refuses a request on a connection past its address's share (429).
pub fn check_connection(connection: Option<&Connection>, max: usize) -> Result<(), actix_web::Error> {
    match connection {
        Some(c) if !c.admitted => Err(refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "connections_per_client",
            format!("more than {max} connections open from this address (http.max_connections_per_client)"),
        )),
        _ => Ok(()),
    }
}

/// Requests in flight per client address.
#[derive(Clone, Default)]
pub struct InFlight(PerAddress);

impl InFlight {
    /// Admits a request from `peer` unless `max` from its address are in
    /// flight; the admitted request is counted until its slot is dropped.
    pub fn enter(&self, peer: Option<SocketAddr>, max: usize) -> Result<Counted, actix_web::Error> {
        let (counted, n) = self.0.add(peer);
        if n > max {
            // Dropping `counted` takes the refused request back off the count.
            return Err(refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "per_client",
                format!("more than {max} requests in flight from this address (http.max_requests_per_client)"),
            ));
        }
        Ok(counted)
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.0.count(ip)
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
        Err(_) => Err(refusal(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request was not received and answered within {timeout:?} (http.request_timeout)"),
        )),
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

    #[test]
    fn connections_past_an_addresses_share_are_marked_and_counted_down() {
        let table = Connections::default();
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let first = table.open(Some(a), 1);
        let second = table.open(Some(a), 1);
        assert!(first.admitted && !second.admitted);
        assert_eq!(check_connection(Some(&second), 1).unwrap_err().as_response_error().status_code(), 429);
        assert!(table.open(Some("10.0.0.2:1".parse().unwrap()), 1).admitted, "another address is not affected");
        drop((first, second));
        assert!(table.open(Some(a), 1).admitted, "closed connections are counted down");
    }

    #[test]
    fn a_uri_longer_than_the_limit_is_414() {
        let long: actix_web::http::Uri = format!("/v1/trades?symbol={}", "A".repeat(9000)).parse().unwrap();
        assert_eq!(check_uri(&long, 8192).unwrap_err().as_response_error().status_code(), 414);
        assert!(check_uri(&"/v1/trades?symbol=BTCUSDT".parse().unwrap(), 8192).is_ok());
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
