//! Confirmed publishing over a lapin connection that heals itself.
//!
//! A [`Publisher`] keeps one connection: a channel for declarations and a few confirm-mode
//! channels for messages, taken in turn by concurrent calls (a channel's confirms arrive in
//! order, so calls on different channels do not wait for each other's). When the broker goes
//! away, the call in flight fails with [`Error::Unavailable`] and the next call reconnects; the
//! outage is logged once when it starts and once when it ends, never per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio::time::Instant;

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

/// How long a finished re-declaration answers for: callers that found a queue missing while
/// one ran do not declare the whole topology again each.
const REDECLARE_COVERS: Duration = Duration::from_secs(1);

/// Opens a connection named after the service (visible in the management UI).
pub(crate) async fn connect(url: &str, name: &str) -> Result<Connection> {
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
    connection: Connection,
    /// Declarations only, nothing on the per-message path.
    control: Channel,
    /// Confirm-mode channels, taken in turn.
    publishing: Vec<Channel>,
}

impl Session {
    fn healthy(&self) -> bool {
        self.connection.status().connected()
            && self.control.status().connected()
            && self.publishing.iter().all(|c| c.status().connected())
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
    session: Mutex<Option<Arc<Session>>>,
    /// When the last re-declaration finished (single flight, see [`Publisher::redeclare`]).
    redeclared: Mutex<Option<Instant>>,
    next: AtomicUsize,
    down: AtomicBool,
}

impl Publisher {
    /// Connects and declares the topology; fails if the broker is unreachable at start.
    /// Publishes go over `channels` confirm channels.
    pub async fn connect(
        url: &str,
        name: &str,
        topology: Topology,
        channels: usize,
    ) -> Result<Self> {
        let p = Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                name: name.to_owned(),
                topology,
                channels: channels.max(1),
                session: Mutex::new(None),
                redeclared: Mutex::new(None),
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
        let connection = connect(&self.inner.url, &self.inner.name).await?;
        let control = connection.create_channel().await?;
        self.inner.topology.declare(&control).await?;
        // A re-declaration asked for right after this one (a consumer starting) has nothing
        // left to do.
        *self.inner.redeclared.lock().await = Some(Instant::now());
        let mut publishing = Vec::with_capacity(self.inner.channels);
        for _ in 0..self.inner.channels {
            let ch = connection.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            publishing.push(ch);
        }
        Ok(Session {
            connection,
            control,
            publishing,
        })
    }

    /// Declares the topology again: after a publish found no queue (someone deleted one).
    /// Single flight: callers that arrive while a re-declaration runs, or within a moment of
    /// one finishing, take its outcome instead of declaring everything again each.
    pub async fn redeclare(&self) -> Result<()> {
        let asked = Instant::now();
        // The session first: opening one declares (and notes it), so the lock below is never
        // held across a reconnect.
        let s = self.session().await?;
        let mut last = self.inner.redeclared.lock().await;
        if last.is_some_and(|done| done >= asked || done.elapsed() < REDECLARE_COVERS) {
            return Ok(());
        }
        self.inner.topology.declare(&s.control).await?;
        *last = Some(Instant::now());
        Ok(())
    }

    /// Publishes every message and returns once the broker confirmed all of them.
    pub async fn publish(&self, messages: &[Outgoing]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let session = self.session().await?;
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let channel = &session.publishing[i % session.publishing.len()];
        let result = publish_on(channel, messages).await;
        if let Err(e @ Error::Unavailable(_)) = &result {
            self.mark_down(e);
        }
        result
    }

    /// Closes the connection (at shutdown, after the last publish).
    pub async fn close(&self) {
        if let Some(s) = self.inner.session.lock().await.take() {
            let _ = s.connection.close(200, ShortString::from("shutdown")).await;
        }
    }
}

/// The properties of every message: persistent JSON, with the message's string headers.
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

/// Publishes the messages back to back on one confirm channel, then waits for all the
/// confirms together; the first failure (nack, unroutable, broken channel) is the result.
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
