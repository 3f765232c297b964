//! The Flight service the port serves: arrow-flight's Flight SQL dispatcher
//! for every call but `GetSchema`, which the dispatcher answers
//! UNIMPLEMENTED whatever the service. Here a statement's (or a prepared
//! statement's) schema is its `GetFlightInfo`'s, planned the same way and
//! under the same checks, without running it: what ADBC's
//! `execute_schema` asks for.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo, SchemaResult, Ticket,
};
use tonic::{Request, Response, Status, Streaming};

use super::service::K2FlightSql;

/// [`K2FlightSql`] behind arrow-flight's dispatcher, with `GetSchema`.
pub struct K2Flight(pub Arc<K2FlightSql>);

type Dispatch = K2FlightSql;

#[tonic::async_trait]
impl FlightService for K2Flight {
    type HandshakeStream = <Dispatch as FlightService>::HandshakeStream;
    type ListFlightsStream = <Dispatch as FlightService>::ListFlightsStream;
    type DoGetStream = <Dispatch as FlightService>::DoGetStream;
    type DoPutStream = <Dispatch as FlightService>::DoPutStream;
    type DoExchangeStream = <Dispatch as FlightService>::DoExchangeStream;
    type DoActionStream = <Dispatch as FlightService>::DoActionStream;
    type ListActionsStream = <Dispatch as FlightService>::ListActionsStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(self.0.as_ref(), request).await
    }

    async fn list_flights(&self, request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        FlightService::list_flights(self.0.as_ref(), request).await
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        FlightService::get_flight_info(self.0.as_ref(), request).await
    }

    async fn poll_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        FlightService::poll_flight_info(self.0.as_ref(), request).await
    }

    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        let info = FlightService::get_flight_info(self.0.as_ref(), request).await?.into_inner();
        // No DoGet follows a GetSchema: the plan kept for one goes.
        for ticket in info.endpoint.iter().filter_map(|e| e.ticket.as_ref()) {
            self.0.forget_plan(&ticket.ticket);
        }
        Ok(Response::new(SchemaResult { schema: info.schema }))
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        FlightService::do_get(self.0.as_ref(), request).await
    }

    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(self.0.as_ref(), request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(self.0.as_ref(), request).await
    }

    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(self.0.as_ref(), request).await
    }

    async fn list_actions(&self, request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(self.0.as_ref(), request).await
    }
}
