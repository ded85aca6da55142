//! Confirmed publishing over a connection that heals itself.
//!
//! A [`Publisher`] keeps two connections: Herald's own confirm-mode client for the messages
//! ([`crate::client`], a few channels), and a lapin one for declarations. When the broker goes
//! away, the call in flight fails with [`Error::Unavailable`] and the next call reconnects both;
//! the outage is logged once when it starts and once when it ends, never per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use herald_core::config::AmqpClient;

use crate::client::{ConfirmConnection, Endpoint};
use crate::error::{Error, Result};
use crate::topology::Topology;

/// One message to publish.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    /// String headers, e.g. the W3C trace context (`traceparent`) of the work it continues.
    pub headers: Vec<(String, String)>,
}

/// The string headers of a received message (the trace context among them).
pub fn string_headers(props: &BasicProperties) -> Vec<(String, String)> {
    let Some(table) = props.headers() else {
        return Vec::new();
    };
    table
        .inner()
        .iter()
        .filter_map(|(k, v)| match v {
            AMQPValue::LongString(s) => Some((k.to_string(), s.to_string())),
            AMQPValue::ShortString(s) => Some((k.to_string(), s.to_string())),
            _ => None,
        })
        .collect()
}

/// A consumer of `queue` on a connection of its own, with the topology declared and
/// `prefetch` unacked messages: the start of every consuming session (dispatcher work queue,
/// ledger records, dead letters). The connection and channel must live as long as the
/// consumer.
pub async fn consume(
    url: &str,
    name: &str,
    topology: Option<&Topology>,
    queue: &str,
    prefetch: u16,
) -> Result<(Connection, Channel, lapin::Consumer)> {
    let conn = connect(url, name).await?;
    let ch = conn.create_channel().await?;
    if let Some(topology) = topology {
        topology.declare(&ch).await?;
    }
    ch.basic_qos(prefetch, lapin::options::BasicQosOptions::default())
        .await?;
    let consumer = ch
        .basic_consume(
            ShortString::from(queue),
            ShortString::from(""),
            lapin::options::BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((conn, ch, consumer))
}

/// Opens a connection named after the service (visible in the management UI).
pub async fn connect(url: &str, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(Duration::from_secs(10), Connection::connect(url, props)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Error::Unavailable(
            "connecting to the broker timed out".into(),
        )),
    }
}

/// What a [`Publisher`] holds between calls.
struct Session {
    /// lapin: declarations, and nothing on the per-message path.
    control: Connection,
    control_channel: Channel,
    publishing: Publishing,
}

/// Where publishes go: Herald's own client (`amqp://` and `amqps://`), or lapin's confirm
/// channels with `HERALD_AMQP_CLIENT=lapin`.
enum Publishing {
    Own(ConfirmConnection),
    Lapin(Vec<Channel>),
}

impl Session {
    fn healthy(&self) -> bool {
        self.control.status().connected()
            && self.control_channel.status().connected()
            && match &self.publishing {
                Publishing::Own(c) => c.is_open(),
                Publishing::Lapin(channels) => channels.iter().all(|c| c.status().connected()),
            }
    }
}

/// Publishes persistent, mandatory messages and waits for the broker's confirms.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    name: String,
    topology: Topology,
    channels: usize,
    client: AmqpClient,
    session: Mutex<Option<Arc<Session>>>,
    next: AtomicUsize,
    down: AtomicBool,
}

impl Publisher {
    /// Connects and declares the topology; fails if the broker is unreachable at start.
    /// `client` publishes over `channels` confirm channels.
    pub async fn connect(
        url: &str,
        name: &str,
        topology: Topology,
        channels: usize,
        client: AmqpClient,
    ) -> Result<Self> {
        let p = Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                name: name.to_owned(),
                topology,
                channels: channels.max(1),
                client,
                session: Mutex::new(None),
                next: AtomicUsize::new(0),
                down: AtomicBool::new(false),
            }),
        };
        p.session().await?;
        Ok(p)
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// Whether the last attempt to use the broker succeeded.
    pub fn is_up(&self) -> bool {
        !self.inner.down.load(Ordering::Relaxed)
    }

    async fn session(&self) -> Result<Arc<Session>> {
        let mut guard = self.inner.session.lock().await;
        if let Some(s) = guard.as_ref()
            && s.healthy()
        {
            return Ok(s.clone());
        }
        *guard = None;
        match self.open().await {
            Ok(s) => {
                let s = Arc::new(s);
                *guard = Some(s.clone());
                if self.inner.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(service = %self.inner.name, "broker connection restored");
                }
                Ok(s)
            }
            Err(e) => {
                self.mark_down(&e);
                Err(e)
            }
        }
    }

    fn mark_down(&self, e: &Error) {
        if !self.inner.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(service = %self.inner.name, error = %e, "broker unavailable");
        }
    }

    async fn open(&self) -> Result<Session> {
        let control = connect(&self.inner.url, &self.inner.name).await?;
        let control_channel = control.create_channel().await?;
        self.inner.topology.declare(&control_channel).await?;
        let own = self.inner.client == AmqpClient::Herald;
        let publishing = if !own {
            let mut channels = Vec::with_capacity(self.inner.channels);
            for _ in 0..self.inner.channels {
                let ch = control.create_channel().await?;
                ch.confirm_select(ConfirmSelectOptions::default()).await?;
                channels.push(ch);
            }
            Publishing::Lapin(channels)
        } else {
            let endpoint = Endpoint::parse(&self.inner.url)?;
            let name = format!("{}.publish", self.inner.name);
            let channels = u16::try_from(self.inner.channels).unwrap_or(u16::MAX);
            Publishing::Own(ConfirmConnection::open(&endpoint, &name, channels).await?)
        };
        Ok(Session {
            control,
            control_channel,
            publishing,
        })
    }

    /// A channel for declarations.
    pub async fn channel(&self) -> Result<Channel> {
        let s = self.session().await?;
        Ok(s.control_channel.clone())
    }

    /// Declares the topology again: after a publish found no queue (someone deleted one).
    pub async fn redeclare(&self) -> Result<()> {
        let s = self.session().await?;
        self.inner.topology.declare(&s.control_channel).await
    }

    /// Publishes every message and returns once the broker confirmed all of them.
    pub async fn publish(&self, messages: &[Outgoing]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let session = self.session().await?;
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let result = match &session.publishing {
            Publishing::Own(c) => c.publish(i, messages).await,
            Publishing::Lapin(channels) => {
                publish_on(&channels[i % channels.len()], messages).await
            }
        };
        if let Err(e @ Error::Unavailable(_)) = &result {
            self.mark_down(e);
        }
        result
    }

    /// Closes the connection (at shutdown, after the last publish).
    pub async fn close(&self) {
        if let Some(s) = self.inner.session.lock().await.take() {
            if let Publishing::Own(c) = &s.publishing {
                c.close().await;
            }
            let _ = s.control.close(200, ShortString::from("shutdown")).await;
        }
    }
}

fn properties(m: &Outgoing) -> BasicProperties {
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"));
    if m.headers.is_empty() {
        return props;
    }
    let mut table = FieldTable::default();
    for (k, v) in &m.headers {
        table.insert(
            ShortString::from(k.as_str()),
            AMQPValue::LongString(LongString::from(v.as_str())),
        );
    }
    props.with_headers(table)
}

async fn publish_on(channel: &Channel, messages: &[Outgoing]) -> Result<()> {
    let options = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let mut confirms = Vec::with_capacity(messages.len());
    for m in messages {
        let confirm = channel
            .basic_publish(
                ShortString::from(m.exchange.as_str()),
                ShortString::from(m.routing_key.as_str()),
                options,
                &m.body,
                properties(m),
            )
            .await?;
        confirms.push(confirm);
    }
    let mut first_error = None;
    for (m, outcome) in messages.iter().zip(join_all(confirms).await) {
        let err = match outcome {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => continue,
            Ok(Confirmation::Ack(Some(_))) => Error::Unroutable {
                exchange: m.exchange.clone(),
                routing_key: m.routing_key.clone(),
            },
            Ok(Confirmation::Nack(_)) => Error::Nacked,
            Err(e) => Error::from(e),
        };
        first_error.get_or_insert(err);
    }
    first_error.map_or(Ok(()), Err)
}

/// Messages ready in each named queue (a passive declare per queue, each on a channel of its
/// own so a missing queue costs nothing else). Queues that do not exist are left out.
pub async fn queue_depths(conn: &Connection, names: &[String]) -> Vec<(String, u32)> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let Ok(ch) = conn.create_channel().await else {
            break;
        };
        let declared = ch
            .queue_declare(
                ShortString::from(name.as_str()),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        if let Ok(q) = declared {
            out.push((name.clone(), q.message_count()));
            let _ = ch.close(200, ShortString::from("sampled")).await;
        }
    }
    out
}

/// Every 5 s, sets the gauge `herald_queue_messages{queue}` for each queue `names()` lists,
/// over a connection of its own (reopened with backoff when the broker goes away).
pub async fn sample_queue_depths(
    url: String,
    names: impl Fn() -> Vec<String> + Send + 'static,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut conn: Option<Connection> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !conn.as_ref().is_some_and(|c| c.status().connected()) {
            conn = connect(&url, "herald-queue-sampler").await.ok();
        }
        let Some(c) = conn.as_ref() else { continue };
        for (queue, n) in queue_depths(c, &names()).await {
            metrics::gauge!("herald_queue_messages", "queue" => queue).set(f64::from(n));
        }
    }
    if let Some(c) = conn {
        let _ = c.close(200, ShortString::from("stopping")).await;
    }
}
