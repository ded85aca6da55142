//! The Operations service: what an operator needs to see and mend beside the delivery log —
//! dead letters (list, inspect, send back) and the depth of every queue. Served by the ledger,
//! which records the dead letters and already holds a publisher; behind the operator token
//! ([`gate`]), never a tenant's key.
//!
//! Sending dead letters back takes the one path `herald-ledger dead-letters replay` takes
//! ([`crate::deadletter::replay`]), and queue depths the broker code the gauges use.

use std::sync::Arc;

use herald_broker::{Admin, Publisher, Topology};
use herald_proto::v1 as pb;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::error::Result;

mod dead_letters;
pub mod gate;
mod queues;

pub struct OperationsApi {
    /// The API's pool (bounded by the statement timeout).
    pub pool: PgPool,
    /// Sends dead letters back.
    pub publisher: Publisher,
    pub topology: Topology,
    /// For the queue-depth connection.
    pub amqp_url: String,
    /// The queue-depth connection, opened on demand.
    pub admin: Arc<Mutex<Option<Admin>>>,
    /// Checks the operator token when the gate in front has not already.
    pub gate: gate::OperatorToken,
}

impl OperationsApi {
    /// Checks the operator token, unless [`gate`] already did before the message was read.
    async fn operator<T>(&self, req: &Request<T>) -> Result<()> {
        if req.extensions().get::<gate::Operator>().is_some() {
            return Ok(());
        }
        let authorization = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.gate.check(authorization).await.map(|_| ())
    }
}

#[tonic::async_trait]
impl pb::operations_server::Operations for OperationsApi {
    async fn list_dead_letters(
        &self,
        req: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        self.operator(&req).await?;
        Ok(Response::new(
            self.list_dead_letters(req.into_inner()).await?,
        ))
    }

    async fn get_dead_letter(
        &self,
        req: Request<pb::GetDeadLetterRequest>,
    ) -> Result<Response<pb::DeadLetter>, Status> {
        self.operator(&req).await?;
        Ok(Response::new(self.get_dead_letter(req.into_inner()).await?))
    }

    async fn replay_dead_letters(
        &self,
        req: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        self.operator(&req).await?;
        Ok(Response::new(
            self.replay_dead_letters(req.into_inner()).await?,
        ))
    }

    async fn get_queue_depths(
        &self,
        req: Request<pb::GetQueueDepthsRequest>,
    ) -> Result<Response<pb::GetQueueDepthsResponse>, Status> {
        self.operator(&req).await?;
        Ok(Response::new(self.queue_depths().await?))
    }
}
