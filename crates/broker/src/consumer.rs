//! A consuming session over lapin: the dispatcher's work queues, the ledger's record queue and
//! the dead-letter queue.
//!
//! lapin's deliveries are converted to Herald's [`Delivery`] (tag, redelivered flag, body,
//! string headers, the newest `x-death` entry), and settlements go through a [`Settler`] (see
//! [`crate::Acks`]), so no lapin type reaches the services.

use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};

use crate::error::{Error, Result};
use crate::publisher::connect;
use crate::topology::Topology;

/// One message handed to the consumer.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub tag: u64,
    /// Handed out before and not acked (the broker's redelivered flag).
    pub redelivered: bool,
    pub body: Bytes,
    /// The string headers (the W3C trace context among them).
    pub headers: Vec<(String, String)>,
    /// On a dead-lettered message, its latest dead-lettering (see [`Death`]).
    pub last_death: Option<Death>,
}

/// The newest entry of a message's `x-death` header, which RabbitMQ keeps newest first (one
/// entry per queue and reason). `x-first-death-queue` and `-reason` never change after the
/// first dead-lettering, so for a task that waited on a delay queue (dead-lettered there when
/// its TTL expired) and was then rejected from the work queue, only this entry says where and
/// why it finally died.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Death {
    pub queue: String,
    /// `rejected`, `expired`, `maxlen` or `delivery_limit`.
    pub reason: String,
    /// When the message was first dead-lettered from that queue for that reason (seconds since
    /// the epoch); a redelivered dead letter keeps it.
    pub time: u64,
}

/// Text of a header value: long strings as lossy UTF-8 (anything may arrive in a header).
fn text(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The string headers of a received message (the trace context among them).
fn string_headers(props: &BasicProperties) -> Vec<(String, String)> {
    let Some(table) = props.headers() else {
        return Vec::new();
    };
    table
        .inner()
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), text(Some(v))?)))
        .collect()
}

/// The newest entry of a message's `x-death` header (see [`Death`]).
fn last_death(props: &BasicProperties) -> Option<Death> {
    let AMQPValue::FieldArray(deaths) = props.headers().as_ref()?.inner().get("x-death")? else {
        return None;
    };
    let Some(AMQPValue::FieldTable(newest)) = deaths.as_slice().first() else {
        return None;
    };
    let field = |name: &str| text(newest.inner().get(name)).unwrap_or_default();
    Some(Death {
        queue: field("queue"),
        reason: field("reason"),
        time: match newest.inner().get("time") {
            Some(AMQPValue::Timestamp(at)) => *at,
            _ => 0,
        },
    })
}

/// Where a consumer's acks, nacks and rejects go: the channel its deliveries came on.
#[derive(Clone)]
pub struct Settler {
    channel: Channel,
}

impl Settler {
    /// Acks `tag`, and with `multiple` every unsettled delivery below it.
    pub async fn ack(&self, tag: u64, multiple: bool) -> Result<()> {
        Ok(self
            .channel
            .basic_ack(tag, BasicAckOptions { multiple })
            .await?)
    }

    /// Puts one delivery back on its queue.
    pub async fn requeue(&self, tag: u64) -> Result<()> {
        let options = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        Ok(self.channel.basic_nack(tag, options).await?)
    }

    /// Dead-letters one delivery (lost with a broken connection, the delivery comes back and
    /// is rejected again).
    pub async fn reject(&self, tag: u64) -> Result<()> {
        Ok(self
            .channel
            .basic_reject(tag, BasicRejectOptions { requeue: false })
            .await?)
    }
}

/// One consuming session of a queue, on a connection of its own: the broker writes a
/// connection's deliveries in order on one socket, so queues sharing one would wait behind each
/// other's backlogs.
pub struct Consumer {
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl Consumer {
    /// Declares the topology (unless `topology` is `None`: declared already by this
    /// process), then consumes `queue` with at most `prefetch` unacked deliveries.
    pub async fn open(
        url: &str,
        name: &str,
        topology: Option<&Topology>,
        queue: &str,
        prefetch: u16,
    ) -> Result<Self> {
        let connection = connect(url, name).await?;
        let channel = connection.create_channel().await?;
        if let Some(topology) = topology {
            topology.declare(&channel).await?;
        }
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                ShortString::from(queue),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            connection,
            channel,
            consumer,
        })
    }

    /// The next delivery; an error once the session ended (connection lost, consumer
    /// cancelled by the broker): every unacked delivery is then back on the queue.
    pub async fn next(&mut self) -> Result<Delivery> {
        match self.consumer.next().await {
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
        }
    }

    /// Where this session's settlements go.
    pub fn settler(&self) -> Settler {
        Settler {
            channel: self.channel.clone(),
        }
    }

    /// Stops new deliveries; those received stay to be settled.
    pub async fn cancel(&self) {
        let _ = self
            .channel
            .basic_cancel(self.consumer.tag(), BasicCancelOptions::default())
            .await;
    }

    /// Closes the session: the broker hands back whatever is unacked.
    pub async fn close(self) {
        let _ = self.channel.close(200, ShortString::from("stopping")).await;
        let _ = self
            .connection
            .close(200, ShortString::from("stopping"))
            .await;
    }
}
