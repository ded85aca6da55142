//! Broker housekeeping on a connection of its own: declaring and deleting a topology, and
//! reading queue depths (the `herald_queue_messages` gauge, the bench, tests).
//!
//! Kept apart from [`crate::Publisher`] so a sampler that is slow or broken never touches the
//! connection messages go over, and so callers outside this crate never hold a lapin type.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};

use crate::error::Result;
use crate::publisher::connect;
use crate::topology::Topology;

/// What a passive declare tells of a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueState {
    pub name: String,
    /// Messages ready (not counting those handed out and unacked).
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// A connection for declarations, deletions and queue depths.
pub struct Admin {
    connection: Connection,
    channel: Channel,
}

impl Admin {
    /// Connects under `name` (shown in the management UI).
    pub async fn connect(url: &str, name: &str) -> Result<Self> {
        let connection = connect(url, name).await?;
        let channel = connection.create_channel().await?;
        Ok(Self {
            connection,
            channel,
        })
    }

    /// Whether the connection is still up.
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Declares every exchange and queue of `topology` (idempotent).
    pub async fn declare(&self, topology: &Topology) -> Result<()> {
        topology.declare(&self.channel).await
    }

    /// Deletes everything `topology` declares, and the legacy per-delay queues of
    /// `legacy_delays` (tests and the bench use it to leave no residue).
    pub async fn delete(&self, topology: &Topology, legacy_delays: &[u64]) -> Result<()> {
        topology.delete(&self.channel, legacy_delays).await
    }

    /// Messages ready and consumers of each named queue (a passive declare per queue, each on
    /// a channel of its own so a missing queue costs nothing else). Queues that do not exist
    /// are left out.
    pub async fn queues(&self, names: &[String]) -> Vec<QueueState> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Ok(ch) = self.connection.create_channel().await else {
                break;
            };
            let declared = ch
                .queue_declare(
                    ShortString::from(name.as_str()),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            if let Ok(q) = declared {
                out.push(QueueState {
                    name: name.clone(),
                    messages: q.message_count(),
                    consumers: q.consumer_count(),
                });
                let _ = ch.close(200, ShortString::from("sampled")).await;
            }
        }
        out
    }

    /// Closes the channel, then the connection.
    pub async fn close(self) {
        let _ = self.channel.close(200, ShortString::from("done")).await;
        let _ = self.connection.close(200, ShortString::from("done")).await;
    }
}

/// Every 5 s, sets the gauge `herald_queue_messages{queue}` for each queue `names()` lists,
/// over a connection of its own (reopened when the broker went away), and hands what it read
/// to `observe` (a dispatcher counts the dispatchers by the consumers of a work queue).
pub async fn sample_queue_depths(
    url: String,
    names: impl Fn() -> Vec<String> + Send + 'static,
    observe: impl Fn(&[QueueState]) + Send + 'static,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut admin: Option<Admin> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !admin.as_ref().is_some_and(Admin::is_connected) {
            admin = Admin::connect(&url, "herald-queue-sampler").await.ok();
        }
        let Some(a) = admin.as_ref() else { continue };
        let states = a.queues(&names()).await;
        for q in &states {
            metrics::gauge!("herald_queue_messages", "queue" => q.name.clone())
                .set(f64::from(q.messages));
        }
        observe(&states);
    }
    if let Some(a) = admin {
        a.close().await;
    }
}
