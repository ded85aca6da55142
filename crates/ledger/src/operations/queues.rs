//! `GetQueueDepths`: messages and consumers of every queue of this installation, read by the
//! broker code the queue-depth gauges use ([`herald_broker::Admin::queues`], a passive declare
//! per queue) over a connection of its own, opened on the first call and again after the
//! broker went away. A queue the broker does not have (not declared yet) is left out.

use herald_broker::Admin;
use herald_proto::v1 as pb;

use super::OperationsApi;
use crate::api::ts;
use crate::error::{Error, Result};

impl OperationsApi {
    pub(super) async fn queue_depths(&self) -> Result<pb::GetQueueDepthsResponse> {
        let every = self.topology.every_queue();
        let names: Vec<String> = every.iter().map(|(name, _)| name.clone()).collect();
        let mut admin = self.admin.lock().await;
        if !admin.as_ref().is_some_and(Admin::is_connected) {
            if let Some(stale) = admin.take() {
                stale.close().await;
            }
            let fresh = Admin::connect(&self.amqp_url, "herald-ledger-operations")
                .await
                .map_err(|source| Error::Broker {
                    message: "the message broker is unreachable, retry later".into(),
                    source,
                })?;
            *admin = Some(fresh);
        }
        let Some(connected) = admin.as_ref() else {
            return Err(Error::Unavailable(
                "the message broker is unreachable, retry later",
            ));
        };
        let states = connected.queues(&names).await;
        let sampled_at = chrono::Utc::now();
        if states.is_empty() && !connected.is_connected() {
            return Err(Error::Unavailable(
                "the message broker is unreachable, retry later",
            ));
        }
        let queues = states
            .into_iter()
            .map(|q| {
                let kind = every
                    .iter()
                    .find(|(name, _)| *name == q.name)
                    .map_or("other", |(_, kind)| kind.as_str());
                pb::QueueDepth {
                    name: self.topology.unprefixed(&q.name).to_owned(),
                    kind: kind.to_owned(),
                    messages: u64::from(q.messages),
                    consumers: q.consumers,
                }
            })
            .collect();
        Ok(pb::GetQueueDepthsResponse {
            queues,
            sampled_at: Some(ts(sampled_at)),
        })
    }
}
