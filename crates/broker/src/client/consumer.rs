//! A consuming connection whose IO runs as two tokio tasks, like [`super::ConfirmConnection`]:
//! the reader assembles deliveries (method, content header, body frames) and hands them over a
//! channel; acks, nacks and rejects are frames appended to the outgoing buffer, so every
//! settlement queued while the writer was busy leaves in its next single `write`.
//!
//! When the connection breaks, the delivery stream ends and settling fails: the broker has
//! already put every unacked delivery back on the queue, so nothing is lost, and the owner
//! opens a new session (the same rule as with lapin).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{Notify, mpsc};

use super::connection::{Flow, Io, Outbox, hand_over};
use super::handshake::{Endpoint, HEARTBEAT_SECS, Opened, close_reason};
use crate::error::{Error, Result};
use crate::frames::{
    self, FRAME_BODY, FRAME_HEADER, FRAME_METHOD, Frame, Value, id, put_method, put_short_str,
};

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
fn text(v: &Value) -> Option<String> {
    match v {
        Value::LongStr(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// The newest entry of an `x-death` header (see [`Death`]).
fn last_death(headers: &[(String, Value)]) -> Option<Death> {
    let (_, Value::Array(deaths)) = headers.iter().find(|(k, _)| k == "x-death")? else {
        return None;
    };
    let Some(Value::Table(newest)) = deaths.first() else {
        return None;
    };
    let field = |name: &str| newest.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    Some(Death {
        queue: field("queue").and_then(text).unwrap_or_default(),
        reason: field("reason").and_then(text).unwrap_or_default(),
        time: match field("time") {
            Some(Value::Timestamp(at)) => *at,
            _ => 0,
        },
    })
}

struct State {
    out: BytesMut,
    broken: Option<String>,
    cancelled: bool,
    /// Writes the writer has taken frames for (the one under way included).
    taken: u64,
    /// Writes completed.
    written: u64,
}

struct Shared {
    state: Mutex<State>,
    wake_writer: Notify,
    /// Raised after every completed write.
    flushed: Notify,
    cancel_ok: Notify,
    name: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame built by `put`; fails once the connection is broken.
    fn send(&self, put: impl FnOnce(&mut BytesMut)) -> Result<()> {
        {
            let mut st = self.lock();
            if let Some(why) = &st.broken {
                return Err(Error::Unavailable(format!("broker connection lost: {why}")));
            }
            put(&mut st.out);
        }
        self.wake_writer.notify_one();
        Ok(())
    }
}

impl Outbox for Shared {
    fn wake(&self) -> &Notify {
        &self.wake_writer
    }

    fn take(&self, spare: &mut BytesMut) -> bool {
        let mut st = self.lock();
        if !st.out.is_empty() {
            st.taken += 1;
        }
        hand_over(&mut st.out, spare);
        st.broken.is_some()
    }

    fn written(&self) {
        {
            let mut st = self.lock();
            st.written = st.taken;
        }
        self.flushed.notify_waiters();
    }

    fn break_with(&self, why: String) {
        {
            let mut st = self.lock();
            if st.broken.is_some() {
                return;
            }
            st.broken = Some(why);
        }
        self.wake_writer.notify_one();
        self.cancel_ok.notify_one();
        self.flushed.notify_waiters();
    }

    fn queue(&self, frames: &[u8]) {
        self.lock().out.extend_from_slice(frames);
        self.wake_writer.notify_one();
    }

    fn is_broken(&self) -> bool {
        self.lock().broken.is_some()
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A consumer of one queue on a connection of its own (channel 1).
pub struct ConsumerConnection {
    shared: Arc<Shared>,
    consumer_tag: String,
    io: Io,
}

/// The largest body accepted (RabbitMQ's own `max_message_size` ceiling).
const MAX_BODY: usize = 512 << 20;

/// How long opening (TCP, login, qos, consume) and cancelling may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

impl ConsumerConnection {
    /// Connects and starts consuming `queue` with `prefetch` unacked deliveries at most; the
    /// receiver yields deliveries until the connection breaks or is closed.
    pub async fn open(
        endpoint: &Endpoint,
        name: &str,
        queue: &str,
        prefetch: u16,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Delivery>)> {
        let mut c = Opened::connect(endpoint, name, HEARTBEAT_SECS, STEP_TIMEOUT).await?;
        let setup = async {
            c.call(1, id::CHANNEL_OPEN, id::CHANNEL_OPEN_OK, |b| {
                put_short_str(b, "")
            })
            .await?;
            c.call(1, id::BASIC_QOS, id::BASIC_QOS_OK, |b| {
                b.put_u32(0);
                b.put_u16(prefetch);
                b.put_u8(0);
                Ok(())
            })
            .await?;
            let mut ok = c
                .call(1, id::BASIC_CONSUME, id::BASIC_CONSUME_OK, |b| {
                    b.put_u16(0);
                    put_short_str(b, queue)?;
                    put_short_str(b, "")?;
                    b.put_u8(0); // no-local, no-ack, exclusive, no-wait: all off
                    frames::put_table(b, &[])
                })
                .await?;
            frames::get_short_str(&mut ok)
                .map_err(|e| Error::Unavailable(format!("broker protocol error: {e}")))
        };
        let consumer_tag = match tokio::time::timeout(STEP_TIMEOUT, setup).await {
            Ok(r) => r?,
            Err(_) => return Err(Error::Unavailable("starting the consumer timed out".into())),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                out: BytesMut::with_capacity(16 * 1024),
                broken: None,
                cancelled: false,
                taken: 0,
                written: 0,
            }),
            wake_writer: Notify::new(),
            flushed: Notify::new(),
            cancel_ok: Notify::new(),
            name: name.to_owned(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let mut assembling = Assembly::Idle;
        let handler_shared = shared.clone();
        let handler = move |frame: Frame| -> Result<Flow, String> {
            handle(&handler_shared, frame, &mut assembling, &tx)
        };
        let io = Io::start(&shared, c, handler);
        Ok((
            Self {
                shared,
                consumer_tag,
                io,
            },
            rx,
        ))
    }

    /// Whether settlements can still be sent.
    pub fn is_open(&self) -> bool {
        self.shared.lock().broken.is_none()
    }

    /// Why the connection ended, once it has.
    pub fn broken(&self) -> Option<String> {
        self.shared.lock().broken.clone()
    }

    /// Acks `tag` (and, with `multiple`, every unsettled delivery below it).
    pub fn ack(&self, tag: u64, multiple: bool) -> Result<()> {
        self.settle(id::BASIC_ACK, tag, frames::bits(&[multiple]))
    }

    /// Hands `tag` (and, with `multiple`, every unsettled one below it) back: to the queue with
    /// `requeue`, else to the dead-letter exchange.
    pub fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<()> {
        self.settle(id::BASIC_NACK, tag, frames::bits(&[multiple, requeue]))
    }

    /// Rejects one delivery: requeued, or dead-lettered.
    pub fn reject(&self, tag: u64, requeue: bool) -> Result<()> {
        self.settle(id::BASIC_REJECT, tag, frames::bits(&[requeue]))
    }

    fn settle(&self, method: (u16, u16), tag: u64, flags: u8) -> Result<()> {
        self.shared.send(|out| {
            put_method(out, 1, method, |b| {
                b.put_u64(tag);
                b.put_u8(flags);
                Ok(())
            })
            .expect("fixed-size arguments encode");
        })
    }

    /// Waits until everything settled so far has been written to the socket; an error when the
    /// connection broke before it was (the broker then requeues what was not settled).
    /// [`crate::Acks`] waits for it between ack frames, so acks that come in meanwhile share the
    /// next `multiple` ack instead of each leaving at once: fewer settle commands for the broker,
    /// as with lapin, whose acks resolve once sent.
    pub async fn flushed(&self) -> Result<()> {
        loop {
            let notified = self.shared.flushed.notified();
            {
                let st = self.shared.lock();
                // Frames still queued go out with the next write: taken + 1.
                let target = st.taken + u64::from(!st.out.is_empty());
                if st.written >= target {
                    return Ok(());
                }
                if let Some(why) = &st.broken {
                    return Err(Error::Unavailable(format!("not written: {why}")));
                }
            }
            notified.await;
        }
    }

    /// Stops deliveries (`basic.cancel`) and waits for the broker's answer; deliveries already
    /// received stay to be settled.
    pub async fn cancel(&self) -> Result<()> {
        let tag = self.consumer_tag.clone();
        self.shared.send(|out| {
            let _ = put_method(out, 1, id::BASIC_CANCEL, |b| {
                put_short_str(b, &tag)?;
                b.put_u8(0);
                Ok(())
            });
        })?;
        let waited = tokio::time::timeout(STEP_TIMEOUT, async {
            loop {
                let notified = self.shared.cancel_ok.notified();
                {
                    let st = self.shared.lock();
                    if st.cancelled || st.broken.is_some() {
                        return;
                    }
                }
                notified.await;
            }
        })
        .await;
        match (waited, self.broken()) {
            (Ok(()), None) => Ok(()),
            (_, Some(why)) => Err(Error::Unavailable(format!("broker connection lost: {why}"))),
            (Err(_), None) => Err(Error::Unavailable(
                "cancelling the consumer timed out".into(),
            )),
        }
    }

    /// Closes the connection (the broker hands back whatever is unacked) and waits up to five
    /// seconds for its answer.
    pub async fn close(&self) {
        self.io.close(&*self.shared).await;
    }
}

impl Drop for ConsumerConnection {
    fn drop(&mut self) {
        self.shared.break_with("connection dropped".into());
        self.io.abort();
    }
}

/// Where the reader is in a delivery's frames.
enum Assembly {
    Idle,
    /// `basic.deliver` read; its content header is next.
    Header {
        tag: u64,
        redelivered: bool,
    },
    /// Body bytes still to come.
    Body {
        tag: u64,
        redelivered: bool,
        headers: Vec<(String, String)>,
        last_death: Option<Death>,
        body: BytesMut,
        size: usize,
    },
}

fn protocol(e: frames::FrameError) -> String {
    format!("broker protocol error: {e}")
}

/// Handles one frame of the consumer's connection.
fn handle(
    shared: &Shared,
    frame: Frame,
    assembling: &mut Assembly,
    deliveries: &mpsc::UnboundedSender<Delivery>,
) -> Result<Flow, String> {
    let ch = frame.channel;
    if ch > 1 {
        return Err(format!("frame on channel {ch}, which was never opened"));
    }
    match (frame.kind, &mut *assembling) {
        (FRAME_HEADER, Assembly::Header { tag, redelivered }) if ch == 1 => {
            let (size, props) = frames::get_content_header(frame.payload).map_err(protocol)?;
            let table = props.headers.unwrap_or_default();
            let last_death = last_death(&table);
            let headers = table
                .into_iter()
                .filter_map(|(k, v)| text(&v).map(|s| (k, s)))
                .collect();
            // RabbitMQ caps messages at 512 MiB; a larger size is a broken peer, not a message.
            let size = usize::try_from(size)
                .ok()
                .filter(|&n| n <= MAX_BODY)
                .ok_or_else(|| {
                    format!("delivery of {size} bytes announced (at most {MAX_BODY})")
                })?;
            let (tag, redelivered) = (*tag, *redelivered);
            *assembling = Assembly::Body {
                tag,
                redelivered,
                headers,
                last_death,
                body: BytesMut::with_capacity(size.min(1 << 20)),
                size,
            };
        }
        (FRAME_BODY, Assembly::Body { body, size, .. }) if ch == 1 => {
            if body.len() + frame.payload.len() > *size {
                return Err("delivery body longer than its header said".into());
            }
            body.extend_from_slice(&frame.payload);
        }
        (FRAME_METHOD, Assembly::Idle) => return method(shared, frame, assembling),
        (kind, _) => return Err(format!("unexpected frame of type {kind} on channel {ch}")),
    }
    if let Assembly::Body { body, size, .. } = assembling
        && body.len() == *size
        && let Assembly::Body {
            tag,
            redelivered,
            headers,
            last_death,
            body,
            ..
        } = std::mem::replace(assembling, Assembly::Idle)
    {
        // The receiver gone means the owner stopped consuming; the delivery stays unacked.
        let _ = deliveries.send(Delivery {
            tag,
            redelivered,
            body: body.freeze(),
            headers,
            last_death,
        });
    }
    Ok(Flow::Go)
}

fn method(shared: &Shared, frame: Frame, assembling: &mut Assembly) -> Result<Flow, String> {
    let ch = frame.channel;
    let Some((method, mut args)) = frame.method() else {
        return Err(format!("method frame too short on channel {ch}"));
    };
    match method {
        id::BASIC_DELIVER if ch == 1 => {
            frames::get_short_str(&mut args).map_err(protocol)?;
            let tag = frames::get_u64(&mut args, "basic.deliver").map_err(protocol)?;
            let redelivered =
                frames::get_u8(&mut args, "basic.deliver").map_err(protocol)? & 1 == 1;
            *assembling = Assembly::Header { tag, redelivered };
        }
        id::BASIC_CANCEL_OK if ch == 1 => {
            shared.lock().cancelled = true;
            shared.cancel_ok.notify_one();
        }
        id::BASIC_CANCEL if ch == 1 => {
            // The broker cancelled the consumer (its queue was deleted, or it moved).
            let tag = frames::get_short_str(&mut args).map_err(protocol)?;
            let no_wait = frames::get_u8(&mut args, "basic.cancel").unwrap_or(1) & 1 == 1;
            if !no_wait {
                let mut out = BytesMut::new();
                put_method(&mut out, 1, id::BASIC_CANCEL_OK, |b| put_short_str(b, &tag))
                    .map_err(protocol)?;
                shared.queue(&out);
            }
            return Err("the broker cancelled the consumer".into());
        }
        id::CHANNEL_CLOSE => {
            shared.queue(&super::connection::bare_method(ch, id::CHANNEL_CLOSE_OK));
            return Err(format!(
                "the broker closed channel {ch}: {}",
                close_reason(args)
            ));
        }
        id::CONNECTION_CLOSE => {
            shared.queue(&super::connection::bare_method(0, id::CONNECTION_CLOSE_OK));
            return Err(format!(
                "the broker closed the connection: {}",
                close_reason(args)
            ));
        }
        id::CONNECTION_CLOSE_OK => return Ok(Flow::Closed),
        id::CONNECTION_BLOCKED | id::CONNECTION_UNBLOCKED => {}
        other => return Err(format!("unexpected method {other:?} on channel {ch}")),
    }
    Ok(Flow::Go)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death(queue: &str, reason: &'static str, at: u64) -> Value {
        Value::Table(vec![
            ("count".into(), Value::I64(1)),
            (
                "queue".into(),
                Value::LongStr(Bytes::from(queue.to_owned())),
            ),
            (
                "reason".into(),
                Value::LongStr(Bytes::from_static(reason.as_bytes())),
            ),
            ("time".into(), Value::Timestamp(at)),
        ])
    }

    #[test]
    fn the_last_death_is_the_newest_x_death_entry_which_comes_first() {
        // Waited on a delay queue (expired there), then rejected from the work queue.
        let headers = vec![
            (
                "x-first-death-queue".into(),
                Value::LongStr(Bytes::from_static(b"h.deliveries.delay.1000")),
            ),
            (
                "x-death".into(),
                Value::Array(vec![
                    death("h.deliveries.work", "rejected", 1_700_000_500),
                    death("h.deliveries.delay.1000", "expired", 1_700_000_000),
                ]),
            ),
        ];
        assert_eq!(
            last_death(&headers),
            Some(Death {
                queue: "h.deliveries.work".into(),
                reason: "rejected".into(),
                time: 1_700_000_500,
            })
        );
        assert_eq!(last_death(&headers[..1]), None, "never dead-lettered");
        let odd = vec![("x-death".into(), Value::LongStr(Bytes::from_static(b"?")))];
        assert_eq!(last_death(&odd), None, "not an array: no death, no error");
    }

    #[test]
    fn header_text_is_decoded_lossily() {
        assert_eq!(
            text(&Value::LongStr(Bytes::from_static(b"ok\xffno"))).as_deref(),
            Some("ok\u{FFFD}no")
        );
        assert_eq!(text(&Value::I64(1)), None);
    }
}
