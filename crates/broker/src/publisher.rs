//! Confirmed publishing over a lapin connection that heals itself.
//!
//! A [`Publisher`] keeps one connection: a channel for declarations and a pool of confirm-mode
//! channels for messages. A call has a channel to itself from its first publish to its last
//! confirm: a `basic.return` does not say which message it returns, and lapin hands it to
//! whichever confirm completes next, so with two calls on one channel an unroutable message
//! could fail the other call while its own call was confirmed (and the message lost). Channels
//! are opened as concurrent calls need them, up to the pool's size, so a quiet publisher keeps
//! one channel and the broker its large confirm batches. When the broker goes away, the call in
//! flight fails with an unavailable error ([`Error::is_unavailable`]) and the next call reconnects; the outage is logged
//! once when it starts and once when it ends, never per call.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::future::{join_all, maybe_done};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::{Mutex, Semaphore};
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

/// Where the next connection starts trying the broker's nodes: one past the node the last
/// connection of this process used, so a process whose node went away tries the others first.
static NEXT_NODE: AtomicUsize = AtomicUsize::new(0);

/// The addresses of `HERALD_AMQP_URL`: one broker, or a cluster's nodes separated by commas.
fn nodes(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Opens a connection named after the service (visible in the management UI) to the first of
/// the broker's nodes that accepts it, trying each once (10 s in all, at least 2 s a node):
/// with a cluster behind `HERALD_AMQP_URL`, losing a node costs a reconnect, not an outage.
pub(crate) async fn connect(url: &str, name: &str) -> Result<Connection> {
    let nodes = nodes(url);
    if nodes.is_empty() {
        return Err(Error::Unavailable("HERALD_AMQP_URL names no broker".into()));
    }
    let per_node = (Duration::from_secs(10) / nodes.len() as u32).max(Duration::from_secs(2));
    let start = NEXT_NODE.load(Ordering::Relaxed);
    let mut last = None;
    for i in 0..nodes.len() {
        let index = (start + i) % nodes.len();
        let props = ConnectionProperties::default().with_connection_name(name.into());
        match tokio::time::timeout(per_node, Connection::connect(nodes[index], props)).await {
            Ok(Ok(connection)) => {
                NEXT_NODE.store(index + 1, Ordering::Relaxed);
                return Ok(connection);
            }
            Ok(Err(e)) => last = Some(Error::from(e)),
            Err(_) => {
                last = Some(Error::Unavailable(
                    "connecting to the broker timed out".into(),
                ))
            }
        }
        if i + 1 < nodes.len() {
            tracing::debug!(
                node = index,
                "broker node refused the connection, trying the next"
            );
        }
    }
    Err(last.expect("at least one node was tried"))
}

/// What a [`Publisher`] holds between calls.
struct Session {
    connection: Connection,
    /// Declarations only, nothing on the per-message path.
    control: Channel,
    /// Confirm-mode channels no call holds.
    idle: std::sync::Mutex<Vec<Channel>>,
    /// A permit per channel a call may hold at once (the pool's size).
    slots: Semaphore,
}

impl Session {
    fn healthy(&self) -> bool {
        self.connection.status().connected() && self.control.status().connected()
    }

    /// An idle channel that is still open (closed ones are dropped), or a new one.
    async fn take_channel(&self) -> Result<Channel> {
        while let Some(ch) = self.idle.lock().expect("idle channels").pop() {
            if ch.status().connected() {
                return Ok(ch);
            }
        }
        confirm_channel(&self.connection).await
    }
}

/// A new channel of `connection` in confirm mode.
async fn confirm_channel(connection: &Connection) -> Result<Channel> {
    let ch = connection.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
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
    down: AtomicBool,
}

impl Publisher {
    /// Connects and declares the topology; fails if the broker is unreachable at start.
    /// At most `channels` calls publish at once, each on a confirm channel of its own.
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
        let first = confirm_channel(&connection).await?;
        Ok(Session {
            connection,
            control,
            idle: std::sync::Mutex::new(vec![first]),
            slots: Semaphore::new(self.inner.channels),
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
        let _slot = session.slots.acquire().await.expect("never closed");
        let result = match session.take_channel().await {
            Ok(channel) => {
                let result = publish_on(&channel, messages).await;
                if channel.status().connected() {
                    session.idle.lock().expect("idle channels").push(channel);
                }
                result
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result
            && e.is_unavailable()
        {
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
///
/// lapin's `basic_publish` hands its frames to the connection's IO thread when first polled and
/// then waits until that thread wrote them: awaited one by one, a call of 2,000 messages waited
/// for 2,000 thread round trips (seconds, with a dispatcher busy on the same cores). Each send
/// is polled once here, in order (so frames and delivery tags keep the order of `messages`),
/// and all the writes are then awaited together.
async fn publish_on(channel: &Channel, messages: &[Outgoing]) -> Result<()> {
    let options = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let mut sends: Vec<_> = messages
        .iter()
        .map(|m| {
            Box::pin(maybe_done(channel.basic_publish(
                ShortString::from(m.exchange.as_str()),
                ShortString::from(m.routing_key.as_str()),
                options,
                &m.body,
                properties(m),
            )))
        })
        .collect();
    std::future::poll_fn(|cx| {
        for send in &mut sends {
            let _ = send.as_mut().poll(cx);
        }
        Poll::Ready(())
    })
    .await;
    join_all(sends.iter_mut().map(|s| s.as_mut())).await;
    let mut confirms = Vec::with_capacity(messages.len());
    for send in &mut sends {
        confirms.push(send.as_mut().take_output().expect("every send finished")?);
    }
    let mut first_error = None;
    for outcome in join_all(confirms).await {
        let err = match outcome {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => continue,
            // The return names the message it returns: lapin may attach it to the confirm of
            // another message of this call.
            Ok(Confirmation::Ack(Some(returned))) => Error::Unroutable {
                exchange: returned.delivery.exchange.to_string(),
                routing_key: returned.delivery.routing_key.to_string(),
            },
            Ok(Confirmation::Nack(_)) => Error::Nacked,
            Err(e) => Error::from(e),
        };
        first_error.get_or_insert(err);
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_each_node_once_in_order() {
        assert_eq!(
            nodes(" amqp://a:5672/%2f, amqp://b:5672/%2f,,amqp://c:5672/%2f "),
            [
                "amqp://a:5672/%2f",
                "amqp://b:5672/%2f",
                "amqp://c:5672/%2f"
            ]
        );
        assert_eq!(nodes("amqp://one/%2f"), ["amqp://one/%2f"]);
        assert!(nodes(" , ").is_empty());
    }

    #[tokio::test]
    async fn a_dead_node_is_skipped_for_a_live_one() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = dead.local_addr().expect("addr").port();
        drop(dead);
        let url = format!(
            "amqp://guest:guest@127.0.0.1:{port}/%2f,amqp://guest:guest@127.0.0.1:5672/%2f"
        );
        NEXT_NODE.store(0, Ordering::Relaxed);
        let c = connect(&url, "herald-broker-test")
            .await
            .expect("second node");
        assert!(c.status().connected());
        assert_eq!(
            NEXT_NODE.load(Ordering::Relaxed),
            2,
            "the next try starts past it"
        );
        let _ = c.close(200, "bye".into()).await;
    }
}
