//! A confirm-mode connection whose IO runs as two tokio tasks.
//!
//! Callers encode their frames themselves, then, under one short lock, take delivery tags,
//! register a waiter and append the frames to the connection's outgoing buffer. The writer
//! task swaps that buffer out and writes it whole, so everything published since its last
//! write leaves in one `write` call; the reader task decodes confirms and settles waiters.
//! No frame crosses a thread on its own, which is where lapin's cost was (see `frames`).
//!
//! Liveness: heartbeats go out when nothing else was written for half the negotiated
//! interval, and the connection counts as dead when nothing arrived for two intervals. A
//! close from the broker (of the connection or any channel), a read or write error, a missed
//! heartbeat or a protocol violation breaks the connection: every call still waiting fails
//! with [`Error::Unavailable`] and later calls fail at once, so the owner opens a new one.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use super::confirms::{Confirm, Route, Tracker};
use super::handshake::{Endpoint, HEARTBEAT_SECS, Opened, Reader, Writer, close_reason};
use crate::error::{Error, Result};
use crate::frames::{
    self, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, Frame, FrameError, Properties,
    Value, id, put_method, put_short_str,
};
use crate::publisher::Outgoing;

type Waiter = oneshot::Sender<Result<()>>;

/// How long opening a connection (TCP, login, channels) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Write buffers keep at most this much capacity between writes: a `PublishBatch` fanned out
/// to many endpoints may queue tens of MB at once, which must not stay allocated.
const RETAINED_BUFFER: usize = 1 << 20;
/// How long [`ConfirmConnection::close`] waits for the broker's `close-ok`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

struct State {
    /// Frames waiting for the writer.
    out: BytesMut,
    tracker: Tracker<Waiter>,
    /// Why the connection can no longer be used.
    broken: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    wake_writer: Notify,
    name: String,
}

/// What the IO tasks need of a connection's shared state (publishing and consuming
/// connections keep different books around the same outgoing buffer).
pub(super) trait Outbox: Send + Sync + 'static {
    fn wake(&self) -> &Notify;
    /// Moves the queued frames into `spare`; true once the connection is broken (the writer
    /// writes what it took, then stops).
    fn take(&self, spare: &mut BytesMut) -> bool;
    /// Everything taken by the last `take` was written.
    fn written(&self) {}
    /// Marks the connection broken (once) and ends whatever waits on it.
    fn break_with(&self, why: String);
    /// Queues frames for the writer.
    fn queue(&self, frames: &[u8]);
    fn is_broken(&self) -> bool;
    /// The connection's name, for logs.
    fn name(&self) -> &str;
}

/// Moves queued frames to the writer's buffer, swapping buffers when it is empty (no copy).
pub(super) fn hand_over(out: &mut BytesMut, spare: &mut BytesMut) {
    if spare.is_empty() {
        std::mem::swap(out, spare);
    } else {
        spare.extend_from_slice(out);
        out.clear();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent bookkeeping (no await inside).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Outbox for Shared {
    fn wake(&self) -> &Notify {
        &self.wake_writer
    }

    fn take(&self, spare: &mut BytesMut) -> bool {
        let mut st = self.lock();
        hand_over(&mut st.out, spare);
        st.broken.is_some()
    }

    fn is_broken(&self) -> bool {
        self.lock().broken.is_some()
    }

    fn name(&self) -> &str {
        &self.name
    }

    /// Marks the connection broken (once) and fails every waiting call with `why`.
    fn break_with(&self, why: String) {
        let failed = {
            let mut st = self.lock();
            if st.broken.is_some() {
                return;
            }
            let failed = st
                .tracker
                .fail_all(|| Error::Unavailable(format!("broker connection lost: {why}")));
            st.broken = Some(why);
            failed
        };
        for (waiter, outcome) in failed {
            let _ = waiter.send(outcome);
        }
        self.wake_writer.notify_one();
    }

    fn queue(&self, frames: &[u8]) {
        self.lock().out.extend_from_slice(frames);
        self.wake_writer.notify_one();
    }
}

/// A connection with `channels` confirm-mode channels, publishing persistent, mandatory
/// messages (see the module doc).
pub struct ConfirmConnection {
    shared: Arc<Shared>,
    channels: u16,
    frame_max: u32,
    io: Io,
}

impl ConfirmConnection {
    /// Connects, logs in and opens `channels` channels in confirm mode.
    pub async fn open(endpoint: &Endpoint, name: &str, channels: u16) -> Result<Self> {
        let channels = channels.max(1);
        let mut c = Opened::connect(endpoint, name, HEARTBEAT_SECS, OPEN_TIMEOUT).await?;
        let setup = async {
            for ch in 1..=channels {
                c.call(ch, id::CHANNEL_OPEN, id::CHANNEL_OPEN_OK, |b| {
                    put_short_str(b, "")
                })
                .await?;
                c.call(ch, id::CONFIRM_SELECT, id::CONFIRM_SELECT_OK, |b| {
                    b.put_u8(0);
                    Ok(())
                })
                .await?;
            }
            Ok::<_, Error>(())
        };
        match tokio::time::timeout(OPEN_TIMEOUT, setup).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Unavailable(
                    "opening confirm channels timed out".into(),
                ));
            }
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                out: BytesMut::with_capacity(64 * 1024),
                tracker: Tracker::new(usize::from(channels)),
                broken: None,
            }),
            wake_writer: Notify::new(),
            name: name.to_owned(),
        });
        let frame_max = c.frame_max;
        let mut content = vec![Content::None; usize::from(channels) + 1];
        let mut done = Vec::new();
        let books = shared.clone();
        let handler = move |frame: Frame| {
            let flow = handle(&books, frame, &mut content, &mut done);
            for (waiter, outcome) in done.drain(..) {
                let _ = waiter.send(outcome);
            }
            flow
        };
        let io = Io::start(&shared, c, handler);
        Ok(Self {
            shared,
            channels,
            frame_max,
            io,
        })
    }

    /// Whether calls can still be made (false once broken or closed).
    pub fn is_open(&self) -> bool {
        self.shared.lock().broken.is_none()
    }

    /// Number of confirm channels.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Messages written and not yet confirmed.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().tracker.in_flight()
    }

    /// Publishes `messages` on channel `channel % channels` and returns once the broker
    /// confirmed every one; fails if any was nacked or returned, or if the connection broke
    /// first. A message that cannot be encoded fails the call before anything is written.
    pub async fn publish(&self, channel: usize, messages: &[Outgoing]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let index = channel % usize::from(self.channels);
        let number = u16::try_from(index + 1).expect("channel numbers fit in u16");
        let size: usize = messages.iter().map(|m| m.body.len() + 128).sum();
        let mut frames = BytesMut::with_capacity(size);
        let mut routes: Vec<Route> = Vec::with_capacity(messages.len());
        for m in messages {
            put_publish(&mut frames, number, m, self.frame_max).map_err(|e| {
                Error::Invalid(format!(
                    "message to {:?}/{:?} cannot be encoded: {e}",
                    m.exchange, m.routing_key
                ))
            })?;
            routes.push((m.exchange.clone(), m.routing_key.clone()));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if let Some(why) = &st.broken {
                return Err(Error::Unavailable(format!("broker connection lost: {why}")));
            }
            if let Some(waiter) = st.tracker.register(index, routes, tx) {
                let _ = waiter.send(Ok(()));
            }
            st.out.extend_from_slice(&frames);
        }
        self.shared.wake_writer.notify_one();
        rx.await.unwrap_or_else(|_| {
            Err(Error::Unavailable(
                "broker connection dropped before the confirms".into(),
            ))
        })
    }

    /// Closes the connection: calls still waiting fail, the broker is sent `connection.close`
    /// and its reply awaited for up to five seconds.
    pub async fn close(&self) {
        self.io.close(&*self.shared).await;
    }
}

/// The reader and writer tasks of one connection (publishing or consuming).
pub(super) struct Io {
    /// (reader, writer); taken by `close`.
    tasks: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
}

impl Io {
    /// Takes over an opened connection: its reader gives every frame but heartbeats to
    /// `handle`, its writer sends what `shared` queues.
    pub(super) fn start<O: Outbox>(
        shared: &Arc<O>,
        opened: Opened,
        handle: impl FnMut(Frame) -> Result<Flow, String> + Send + 'static,
    ) -> Self {
        let Opened {
            reader,
            writer,
            buf,
            frame_max,
            heartbeat,
        } = opened;
        let interval = (heartbeat > 0).then(|| Duration::from_secs(u64::from(heartbeat)));
        let reader = tokio::spawn(read_loop(
            shared.clone(),
            reader,
            buf,
            frame_max,
            interval,
            handle,
        ));
        let writer = tokio::spawn(write_loop(shared.clone(), writer, interval));
        Self {
            tasks: Mutex::new(Some((reader, writer))),
        }
    }

    /// Sends `connection.close`, waits for the reader to see the answer (or the socket end),
    /// then for the writer; each wait at most five seconds, after which the task is aborted.
    pub(super) async fn close<O: Outbox>(&self, shared: &O) {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut out = BytesMut::new();
        let _ = put_method(&mut out, 0, id::CONNECTION_CLOSE, |b| {
            b.put_u16(200);
            put_short_str(b, "closing")?;
            b.put_u16(0);
            b.put_u16(0);
            Ok(())
        });
        let open = !shared.is_broken();
        if open {
            shared.queue(&out);
        }
        let Some((mut reader, mut writer)) = tasks else {
            shared.break_with("closed by Herald".into());
            return;
        };
        if open
            && tokio::time::timeout(CLOSE_TIMEOUT, &mut reader)
                .await
                .is_err()
        {
            tracing::debug!(connection = %shared.name(), "no close-ok from the broker");
        }
        // A reader still running (no close-ok, heartbeats still coming) would keep the socket.
        reader.abort();
        shared.break_with("closed by Herald".into());
        // A writer stuck in a write the broker no longer reads (resource alarm) is ended too.
        if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }

    /// Ends both tasks at once (the connection is dropped).
    pub(super) fn abort(&self) {
        if let Some((reader, writer)) = &*self.tasks.lock().unwrap_or_else(|p| p.into_inner()) {
            reader.abort();
            writer.abort();
        }
    }
}

impl Drop for ConfirmConnection {
    fn drop(&mut self) {
        // Ends both tasks: the writer sees the connection broken and shuts its half, the
        // reader then sees the broker close the socket.
        self.shared.break_with("connection dropped".into());
        self.io.abort();
    }
}

/// Appends one persistent, mandatory publish with its content frames.
fn put_publish(
    out: &mut BytesMut,
    channel: u16,
    m: &Outgoing,
    frame_max: u32,
) -> Result<(), FrameError> {
    let start = out.len();
    let headers = (!m.headers.is_empty()).then(|| {
        m.headers
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value::LongStr(bytes::Bytes::copy_from_slice(v.as_bytes())),
                )
            })
            .collect()
    });
    let properties = Properties {
        content_type: Some("application/json".to_owned()),
        delivery_mode: Some(2),
        headers,
        ..Properties::default()
    };
    let written = put_method(out, channel, id::BASIC_PUBLISH, |b| {
        b.put_u16(0);
        put_short_str(b, &m.exchange)?;
        put_short_str(b, &m.routing_key)?;
        b.put_u8(frames::bits(&[true, false])); // mandatory, not immediate
        Ok(())
    })
    .and_then(|()| frames::put_content(out, channel, &properties, &m.body, frame_max));
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// Writes what callers queued, whole, and heartbeats when idle.
async fn write_loop<O: Outbox>(shared: Arc<O>, mut writer: Writer, heartbeat: Option<Duration>) {
    let idle = heartbeat.map_or(Duration::from_secs(3600), |h| h / 2);
    let mut spare = BytesMut::with_capacity(64 * 1024);
    let mut last_write = Instant::now();
    let tick = tokio::time::sleep(idle);
    tokio::pin!(tick);
    loop {
        tokio::select! {
            () = shared.wake().notified() => {}
            () = &mut tick => {
                if heartbeat.is_some() && last_write.elapsed() >= idle {
                    frames::put_heartbeat(&mut spare);
                }
                tick.as_mut().reset((Instant::now() + idle).into());
            }
        }
        let stop = shared.take(&mut spare);
        if !spare.is_empty() {
            // The flush matters with TLS: records the socket could not take yet wait in the
            // session until flushed (a no-op on plain TCP).
            let sent = async {
                writer.write_all(&spare).await?;
                writer.flush().await
            };
            if let Err(e) = sent.await {
                shared.break_with(format!("writing to the broker: {e}"));
                break;
            }
            spare.clear();
            if spare.capacity() > RETAINED_BUFFER {
                spare = BytesMut::with_capacity(64 * 1024);
            }
            last_write = Instant::now();
            shared.written();
        }
        if stop {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

/// Per channel, what the reader expects next besides methods.
#[derive(Clone, Copy)]
enum Content {
    None,
    /// The header of a returned message.
    Header,
    /// Body bytes of a returned message still to come.
    Body(u64),
}

/// Reads frames until the connection breaks, giving each to `handle`; breaks the connection
/// with the reason it ended.
async fn read_loop<O: Outbox>(
    shared: Arc<O>,
    mut reader: Reader,
    mut buf: BytesMut,
    frame_max: u32,
    heartbeat: Option<Duration>,
    mut handle: impl FnMut(Frame) -> Result<Flow, String> + Send + 'static,
) {
    let dead_after = heartbeat.map_or(Duration::from_secs(3600 * 24), |h| h * 2);
    let mut last_read = Instant::now();
    let deadline = tokio::time::sleep(dead_after);
    tokio::pin!(deadline);
    let why = 'read: loop {
        loop {
            let frame = match frames::decode(&mut buf, frame_max) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'read format!("broker protocol error: {e}"),
            };
            if frame.kind == FRAME_HEARTBEAT {
                // Liveness only (any read counts); a heartbeat may come between the frames of
                // one message, so it never reaches the handlers.
                continue;
            }
            match handle(frame) {
                Ok(Flow::Go) => {}
                Ok(Flow::Closed) => break 'read "closed by Herald".to_owned(),
                Err(why) => break 'read why,
            }
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break 'read "the broker closed the socket".to_owned(),
                Ok(_) => last_read = Instant::now(),
                Err(e) => break 'read format!("reading from the broker: {e}"),
            },
            () = &mut deadline => {
                if last_read.elapsed() >= dead_after {
                    break 'read format!("no heartbeat from the broker for {dead_after:?}");
                }
                deadline.as_mut().reset((last_read + dead_after).into());
            }
        }
    };
    if why != "closed by Herald" {
        tracing::info!(connection = %shared.name(), reason = %why, "broker connection ended");
    }
    shared.break_with(why);
}

pub(super) enum Flow {
    Go,
    /// The broker answered our `connection.close`.
    Closed,
}

fn protocol(e: FrameError) -> String {
    format!("broker protocol error: {e}")
}

/// Handles one frame; an error is why the connection must end.
fn handle(
    shared: &Shared,
    frame: Frame,
    content: &mut [Content],
    done: &mut Vec<(Waiter, Result<()>)>,
) -> Result<Flow, String> {
    let ch = usize::from(frame.channel);
    if ch >= content.len() {
        return Err(format!("frame on channel {ch}, which was never opened"));
    }
    match (frame.kind, content[ch]) {
        (FRAME_HEADER, Content::Header) => {
            let (size, _) = frames::get_content_header(frame.payload).map_err(protocol)?;
            content[ch] = if size == 0 {
                Content::None
            } else {
                Content::Body(size)
            };
            return Ok(Flow::Go);
        }
        (FRAME_BODY, Content::Body(left)) => {
            let left = left.saturating_sub(frame.payload.len() as u64);
            content[ch] = if left == 0 {
                Content::None
            } else {
                Content::Body(left)
            };
            return Ok(Flow::Go);
        }
        (FRAME_METHOD, Content::None) => {}
        (kind, _) => return Err(format!("unexpected frame of type {kind} on channel {ch}")),
    }
    let Some((method, mut args)) = frame.method() else {
        return Err(format!("method frame too short on channel {ch}"));
    };
    match method {
        id::BASIC_ACK | id::BASIC_NACK => {
            let tag = frames::get_u64(&mut args, "confirm").map_err(protocol)?;
            let multiple = frames::get_u8(&mut args, "confirm").map_err(protocol)? & 1 == 1;
            let kind = if method == id::BASIC_ACK {
                Confirm::Ack
            } else {
                Confirm::Nack
            };
            if ch == 0 {
                return Err("confirm on channel 0".into());
            }
            shared
                .lock()
                .tracker
                .confirm(ch - 1, tag, multiple, kind, done)?;
        }
        id::BASIC_RETURN => {
            let code = frames::get_u16(&mut args, "basic.return").map_err(protocol)?;
            let text = frames::get_short_str(&mut args).map_err(protocol)?;
            let exchange = frames::get_short_str(&mut args).map_err(protocol)?;
            let key = frames::get_short_str(&mut args).map_err(protocol)?;
            if ch == 0 {
                return Err("basic.return on channel 0".into());
            }
            tracing::debug!(connection = %shared.name, code, text, exchange, routing_key = key, "message returned");
            shared.lock().tracker.returned(ch - 1, &exchange, &key);
            content[ch] = Content::Header;
        }
        id::CONNECTION_CLOSE => {
            shared.queue(&bare_method(0, id::CONNECTION_CLOSE_OK));
            return Err(format!(
                "the broker closed the connection: {}",
                close_reason(args)
            ));
        }
        id::CONNECTION_CLOSE_OK => return Ok(Flow::Closed),
        id::CHANNEL_CLOSE => {
            shared.queue(&bare_method(frame.channel, id::CHANNEL_CLOSE_OK));
            return Err(format!(
                "the broker closed channel {ch}: {}",
                close_reason(args)
            ));
        }
        id::CONNECTION_BLOCKED => {
            let reason = frames::get_short_str(&mut args).unwrap_or_default();
            metrics::gauge!("herald_broker_blocked", "connection" => shared.name.clone()).set(1.0);
            tracing::warn!(connection = %shared.name, reason, "broker blocked publishing (resource alarm): publishes wait");
        }
        id::CONNECTION_UNBLOCKED => {
            metrics::gauge!("herald_broker_blocked", "connection" => shared.name.clone()).set(0.0);
            tracing::info!(connection = %shared.name, "broker unblocked publishing");
        }
        other => {
            return Err(format!("unexpected method {other:?} on channel {ch}"));
        }
    }
    Ok(Flow::Go)
}

/// A method without arguments (the close-oks).
pub(super) fn bare_method(channel: u16, method: (u16, u16)) -> BytesMut {
    let mut out = BytesMut::new();
    put_method(&mut out, channel, method, |_| Ok(())).expect("no arguments to encode");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(exchange: &str, key: &str, headers: &[(&str, &str)]) -> Outgoing {
        Outgoing {
            exchange: exchange.into(),
            routing_key: key.into(),
            body: b"{\"a\":1}".to_vec(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn a_publish_is_mandatory_persistent_json_with_string_headers() {
        let mut out = BytesMut::new();
        put_publish(
            &mut out,
            2,
            &message("ex", "key", &[("traceparent", "00-ab")]),
            4096,
        )
        .unwrap();
        let mut frames_read = Vec::new();
        while let Some(f) = frames::decode(&mut out, 4096).unwrap() {
            frames_read.push(f);
        }
        assert_eq!(frames_read.len(), 3);
        assert!(frames_read.iter().all(|f| f.channel == 2));
        let (method, mut args) = frames_read[0].method().unwrap();
        assert_eq!(method, id::BASIC_PUBLISH);
        assert_eq!(frames::get_u16(&mut args, "t").unwrap(), 0);
        assert_eq!(frames::get_short_str(&mut args).unwrap(), "ex");
        assert_eq!(frames::get_short_str(&mut args).unwrap(), "key");
        assert_eq!(frames::get_u8(&mut args, "t").unwrap(), 1, "mandatory only");
        let (size, props) = frames::get_content_header(frames_read[1].payload.clone()).unwrap();
        assert_eq!(size, 7);
        assert_eq!(props.delivery_mode, Some(2));
        assert_eq!(props.content_type.as_deref(), Some("application/json"));
        let headers = props.headers.unwrap();
        assert_eq!(headers[0].0, "traceparent");
        assert_eq!(headers[0].1.as_str(), Some("00-ab"));
        assert_eq!(&frames_read[2].payload[..], b"{\"a\":1}");
    }

    #[test]
    fn a_message_that_cannot_be_encoded_leaves_nothing_behind() {
        let mut out = BytesMut::new();
        put_publish(&mut out, 1, &message("ex", "k", &[]), 4096).unwrap();
        let before = out.len();
        let long_key = "k".repeat(300);
        assert!(put_publish(&mut out, 1, &message("ex", &long_key, &[]), 4096).is_err());
        let long_header = "h".repeat(300);
        assert!(
            put_publish(
                &mut out,
                1,
                &message("ex", "k", &[(&long_header, "v")]),
                4096
            )
            .is_err()
        );
        assert_eq!(out.len(), before);
    }
}
