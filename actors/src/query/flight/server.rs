//! The Flight SQL port: a supervised actor that owns the gRPC server; a
//! restart serves again on the same listener.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;

use super::front::K2Flight;
use super::service::{K2FlightSql, authorizer};
use crate::runtime::messages::Fault;
use crate::runtime::supervision::{Supervise, Supervision, restartable};

pub const NAME: &str = "flight-sql-server";

pub struct FlightServerActor {
    listener: Arc<TcpListener>,
    service: Arc<K2FlightSql>,
    keys: Arc<Vec<String>>,
    task: Option<tokio::task::AbortHandle>,
    supervision: Supervision,
}

impl FlightServerActor {
    /// Takes a listener bound before the service starts (so the port is
    /// known and a bind failure stops the start with a clear error).
    pub fn new(
        listener: Arc<TcpListener>,
        service: Arc<K2FlightSql>,
        keys: Arc<Vec<String>>,
        sup: Supervision,
    ) -> Self {
        Self { listener, service, keys, task: None, supervision: sup }
    }
}

/// The listener's connections; a failed accept (out of descriptors, say)
/// is retried, since the server would end on it.
fn incoming(
    listener: Arc<TcpListener>,
    probe: crate::runtime::health::Probe,
) -> impl futures_util::Stream<Item = Result<tokio::net::TcpStream, std::io::Error>> {
    futures_util::stream::unfold((listener, probe), |(listener, probe)| async move {
        loop {
            match listener.accept().await {
                Ok((socket, _)) => {
                    // Small batches of a result go out at once.
                    let _ = socket.set_nodelay(true);
                    probe.handled(1);
                    return Some((Ok(socket), (listener, probe)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "flight sql: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

impl Actor for FlightServerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        let service = tonic::service::interceptor::InterceptedService::new(
            FlightServiceServer::new(K2Flight(self.service.clone())),
            authorizer(self.keys.clone()),
        );
        let connections = incoming(self.listener.clone(), self.supervision.probe().clone());
        let task = tokio::spawn(async move {
            match tonic::transport::Server::builder().add_service(service).serve_with_incoming(connections).await {
                Ok(()) => "the Flight SQL server ended".to_owned(),
                Err(e) => format!("the Flight SQL server failed: {e}"),
            }
        });
        self.task = Some(task.abort_handle());
        ctx.spawn(task.into_actor(self).map(|ended, act, ctx| {
            let reason = crate::runtime::supervision::task_ended(ended, "the Flight SQL server");
            act.task = None;
            act.supervision.fail(reason);
            ctx.stop();
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

restartable!(FlightServerActor);

impl Supervise for FlightServerActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    fn reset(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Handler<Fault> for FlightServerActor {
    type Result = ();

    fn handle(&mut self, fault: Fault, ctx: &mut Context<Self>) {
        tracing::warn!(actor = NAME, ?fault, "injecting fault");
        ctx.stop();
    }
}
