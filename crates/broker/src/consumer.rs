//! A consuming session over either client: the dispatcher's work queue, the ledger's record
//! queue and the dead-letter queue.
//!
//! With [`AmqpClient::Herald`] the deliveries come from [`crate::client::ConsumerConnection`]
//! (IO on the tokio runtime; the topology is declared first over a short-lived lapin
//! connection); with [`AmqpClient::Lapin`] from a lapin consumer, converted to the same
//! [`Delivery`]. Either way, settlements go through a [`Settler`] (see [`crate::Acks`]).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use herald_core::config::AmqpClient;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, ShortString};
use lapin::{Channel, Connection};
use tokio::sync::mpsc;

use crate::client::{ConsumerConnection, Endpoint};
pub use crate::client::{Death, Delivery};
use crate::error::{Error, Result};
use crate::publisher::{connect, consume, string_headers};
use crate::topology::Topology;

/// Where a consumer's acks, nacks and rejects go.
#[derive(Clone)]
pub enum Settler {
    Lapin(Channel),
    Own(Arc<ConsumerConnection>),
}

impl From<Channel> for Settler {
    fn from(ch: Channel) -> Self {
        Settler::Lapin(ch)
    }
}

impl Settler {
    /// Acks `tag`, and with `multiple` every unsettled delivery below it.
    pub async fn ack(&self, tag: u64, multiple: bool) -> Result<()> {
        match self {
            Settler::Lapin(ch) => Ok(ch.basic_ack(tag, BasicAckOptions { multiple }).await?),
            Settler::Own(c) => {
                c.ack(tag, multiple)?;
                c.flushed().await
            }
        }
    }

    /// Puts one delivery back on its queue. With the own client the frame is queued, not yet
    /// written, when this returns: frames leave in order, so a later ack cannot overtake it,
    /// and if the connection breaks first the broker requeues the delivery anyway.
    pub async fn requeue(&self, tag: u64) -> Result<()> {
        match self {
            Settler::Lapin(ch) => {
                let options = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                Ok(ch.basic_nack(tag, options).await?)
            }
            Settler::Own(c) => c.nack(tag, false, true),
        }
    }

    /// Dead-letters one delivery (queued like [`Settler::requeue`] with the own client; lost
    /// with a broken connection, the delivery comes back and is rejected again).
    pub async fn reject(&self, tag: u64) -> Result<()> {
        match self {
            Settler::Lapin(ch) => Ok(ch
                .basic_reject(tag, BasicRejectOptions { requeue: false })
                .await?),
            Settler::Own(c) => c.reject(tag, false),
        }
    }
}

/// The newest entry of a lapin message's `x-death` header (see [`Death`]).
fn last_death(props: &lapin::BasicProperties) -> Option<Death> {
    let AMQPValue::FieldArray(deaths) = props.headers().as_ref()?.inner().get("x-death")? else {
        return None;
    };
    let Some(AMQPValue::FieldTable(newest)) = deaths.as_slice().first() else {
        return None;
    };
    let text = |name: &str| match newest.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.to_string(),
        _ => String::new(),
    };
    Some(Death {
        queue: text("queue"),
        reason: text("reason"),
        time: match newest.inner().get("time") {
            Some(AMQPValue::Timestamp(at)) => *at,
            _ => 0,
        },
    })
}

// One per consuming session: the size of the lapin variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Session {
    Own {
        connection: Arc<ConsumerConnection>,
        deliveries: mpsc::UnboundedReceiver<Delivery>,
    },
    Lapin {
        connection: Connection,
        channel: Channel,
        consumer: lapin::Consumer,
    },
}

/// One consuming session of a queue.
pub struct Consumer {
    session: Session,
}

impl Consumer {
    /// Declares the topology (unless `topology` is `None`: declared already by this
    /// process), then consumes `queue` with at most `prefetch` unacked deliveries, over
    /// `client`.
    pub async fn open(
        url: &str,
        name: &str,
        topology: Option<&Topology>,
        queue: &str,
        prefetch: u16,
        client: AmqpClient,
    ) -> Result<Self> {
        if client == AmqpClient::Lapin {
            let (connection, channel, consumer) =
                consume(url, name, topology, queue, prefetch).await?;
            return Ok(Self {
                session: Session::Lapin {
                    connection,
                    channel,
                    consumer,
                },
            });
        }
        let endpoint = Endpoint::parse(url)?;
        if let Some(topology) = topology {
            let declaring = connect(url, name).await?;
            let declared = async {
                let ch = declaring.create_channel().await?;
                topology.declare(&ch).await?;
                // Closed before its connection: lapin logs an error for a channel still open.
                let _ = ch.close(200, ShortString::from("declared")).await;
                Ok::<_, Error>(())
            }
            .await;
            let _ = declaring.close(200, ShortString::from("declared")).await;
            declared?;
        }
        let (connection, deliveries) =
            ConsumerConnection::open(&endpoint, name, queue, prefetch).await?;
        Ok(Self {
            session: Session::Own {
                connection: Arc::new(connection),
                deliveries,
            },
        })
    }

    /// The next delivery; an error once the session ended (connection lost, consumer
    /// cancelled by the broker): every unacked delivery is then back on the queue.
    pub async fn next(&mut self) -> Result<Delivery> {
        match &mut self.session {
            Session::Own {
                connection,
                deliveries,
            } => match deliveries.recv().await {
                // Once the connection is gone the broker has requeued everything unacked:
                // deliveries still buffered here must not be worked on (a duplicate each).
                Some(d) if connection.is_open() => Ok(d),
                _ => Err(Error::Unavailable(
                    connection
                        .broken()
                        .unwrap_or_else(|| "the consumer stopped".into()),
                )),
            },
            Session::Lapin { consumer, .. } => match consumer.next().await {
                Some(Ok(d)) => Ok(Delivery {
                    tag: d.delivery_tag,
                    redelivered: d.redelivered,
                    headers: string_headers(&d.properties),
                    last_death: last_death(&d.properties),
                    body: Bytes::from(d.data),
                }),
                Some(Err(e)) => Err(Error::from(e)),
                None => Err(Error::Unavailable(
                    "consumer cancelled by the broker".into(),
                )),
            },
        }
    }

    /// Where this session's settlements go.
    pub fn settler(&self) -> Settler {
        match &self.session {
            Session::Own { connection, .. } => Settler::Own(connection.clone()),
            Session::Lapin { channel, .. } => Settler::Lapin(channel.clone()),
        }
    }

    /// Stops new deliveries; those received stay to be settled.
    pub async fn cancel(&self) {
        match &self.session {
            Session::Own { connection, .. } => {
                let _ = connection.cancel().await;
            }
            Session::Lapin {
                channel, consumer, ..
            } => {
                let _ = channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await;
            }
        }
    }

    /// Closes the session: the broker hands back whatever is unacked.
    pub async fn close(self) {
        match self.session {
            Session::Own { connection, .. } => connection.close().await,
            Session::Lapin {
                connection,
                channel,
                ..
            } => {
                let _ = channel.close(200, ShortString::from("stopping")).await;
                let _ = connection.close(200, ShortString::from("stopping")).await;
            }
        }
    }
}
