//! Confirmed publishing over a connection that heals itself.
//!
//! A [`Publisher`] keeps one connection with a few confirm-mode channels. When the broker goes
//! away, the call in flight fails with [`Error::Unavailable`] and the next call reconnects; the
//! outage is logged once when it starts and once when it ends, never per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::topology::Topology;

/// One message to publish.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
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

struct Session {
    connection: Connection,
    channels: Vec<Channel>,
}

impl Session {
    fn healthy(&self) -> bool {
        self.connection.status().connected() && self.channels.iter().all(|c| c.status().connected())
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
    next: AtomicUsize,
    down: AtomicBool,
}

impl Publisher {
    /// Connects and declares the topology; fails if the broker is unreachable at start.
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
        let mut channels = Vec::with_capacity(self.inner.channels);
        for _ in 0..self.inner.channels {
            let ch = connection.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            channels.push(ch);
        }
        self.inner.topology.declare(&channels[0]).await?;
        Ok(Session {
            connection,
            channels,
        })
    }

    /// A confirm-mode channel for declarations (e.g. lazily declared delay queues).
    pub async fn channel(&self) -> Result<Channel> {
        let s = self.session().await?;
        Ok(s.channels[0].clone())
    }

    /// Publishes every message and returns once the broker confirmed all of them.
    pub async fn publish(&self, messages: &[Outgoing]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let session = self.session().await?;
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % session.channels.len();
        let result = publish_on(&session.channels[i], messages).await;
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

fn properties() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
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
                properties(),
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
