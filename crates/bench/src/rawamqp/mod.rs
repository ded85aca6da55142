//! A minimal AMQP 0-9-1 client for one baseline: how fast the broker moves persistent,
//! confirmed messages when the client costs next to nothing.
//!
//! The lapin baselines measure the broker plus lapin. lapin runs its socket IO on a thread of
//! its own, so every frame crosses threads (a futex wake-up each way), and profiles of the
//! one-hop baseline show the client spending about as much CPU per message as RabbitMQ itself.
//! This client does the same work (persistent publishes on a confirm channel, a window of 256
//! confirms, a consumer with a prefetch of 256 that acks every message on its own) from one
//! task per connection on the tokio runtime, and writes every frame that is ready in one
//! `write` call. The gap between the two one-hop figures is what the client library costs.
//!
//! It speaks just enough of the protocol for that, over its own handshake ([`handshake`]) and
//! codec ([`frames`]): plain TCP, no heartbeats, channel 1 only. Any frame it does not expect (a
//! channel or connection close included) ends the run with an error naming it. Nothing a
//! service runs uses it: Herald's services speak AMQP through lapin (`herald-broker`).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use bytes::{BufMut, Bytes, BytesMut};
mod frames;
mod handshake;

use frames::{
    FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, Frame, FrameError, Properties, id,
    put_method, put_short_str,
};
use handshake::{Endpoint, Opened, close_reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Codec results as this module's errors.
fn ok<T>(r: Result<T, FrameError>) -> Result<T> {
    r.map_err(anyhow::Error::from)
}

/// One connection with channel 1 open, read and written by its owner directly (the broker's
/// handshake, without the tasks of Herald's publishing client).
pub struct RawConnection {
    c: Opened,
}

impl RawConnection {
    /// Connects, logs in (no heartbeats: a baseline lasts seconds), opens channel 1.
    pub async fn open(url: &str) -> Result<Self> {
        let endpoint = Endpoint::parse(url)?;
        let mut c = Opened::connect(&endpoint, "herald-bench", 0, Duration::from_secs(10)).await?;
        c.call(1, id::CHANNEL_OPEN, id::CHANNEL_OPEN_OK, |b| {
            put_short_str(b, "")
        })
        .await?;
        Ok(Self { c })
    }

    fn frame_max(&self) -> u32 {
        self.c.frame_max
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.c.send(bytes).await
    }

    /// Sends a method on channel 1 and waits for its reply.
    async fn call(
        &mut self,
        request: (u16, u16),
        reply: (u16, u16),
        args: impl FnOnce(&mut BytesMut) -> Result<(), FrameError>,
    ) -> Result<Bytes> {
        self.c.call(1, request, reply, args).await
    }

    /// The next whole frame in the buffer, skipping heartbeats; None while incomplete.
    fn parse(&mut self) -> Result<Option<Frame>> {
        loop {
            match ok(frames::decode(&mut self.c.buf, self.c.frame_max))? {
                Some(f) if f.kind == FRAME_HEARTBEAT => continue,
                other => return Ok(other),
            }
        }
    }

    /// Reads whatever the socket has into the buffer.
    async fn fill(&mut self) -> Result<()> {
        if self.c.reader.read_buf(&mut self.c.buf).await? == 0 {
            bail!("the broker closed the connection");
        }
        Ok(())
    }

    async fn close(mut self) {
        let _ = self.c.writer.shutdown().await;
    }
}

fn unexpected(got: (u16, u16), args: Bytes) -> anyhow::Error {
    if got == id::CONNECTION_CLOSE || got == id::CHANNEL_CLOSE {
        anyhow!("the broker closed: {}", close_reason(args))
    } else {
        anyhow!("unexpected method {got:?}")
    }
}

/// Appends one persistent publish to the default exchange (method, header, body frames).
fn put_publish(out: &mut BytesMut, queue: &str, payload: &[u8], frame_max: u32) -> Result<()> {
    ok(put_method(out, 1, id::BASIC_PUBLISH, |b| {
        b.put_u16(0);
        put_short_str(b, "")?;
        put_short_str(b, queue)?;
        b.put_u8(0);
        Ok(())
    }))?;
    let persistent = Properties {
        delivery_mode: Some(2),
        ..Default::default()
    };
    ok(frames::put_content(out, 1, &persistent, payload, frame_max))
}

/// Publisher confirms received, as the highest tag below which every message is confirmed.
#[derive(Default)]
struct Confirms {
    through: u64,
    /// Tags confirmed singly above `through`.
    ahead: std::collections::BTreeSet<u64>,
}

impl Confirms {
    /// Takes one `basic.ack` and returns how many messages are confirmed in a row from the
    /// first.
    fn ack(&mut self, tag: u64, multiple: bool) -> u64 {
        if multiple {
            self.through = self.through.max(tag);
            self.ahead = self.ahead.split_off(&(self.through + 1));
        } else if tag > self.through {
            self.ahead.insert(tag);
        }
        while self.ahead.remove(&(self.through + 1)) {
            self.through += 1;
        }
        self.through
    }
}

/// Publishes persistent messages to `queue` for `window`, keeping `in_flight` confirms
/// outstanding; returns how many were confirmed.
pub async fn publish_for(
    url: &str,
    queue: &str,
    payload: &[u8],
    window: Duration,
    in_flight: u64,
) -> Result<u64> {
    let mut c = RawConnection::open(url).await?;
    c.call(id::CONFIRM_SELECT, id::CONFIRM_SELECT_OK, |b| {
        b.put_u8(0);
        Ok(())
    })
    .await?;
    let until = Instant::now() + window;
    let mut published = 0u64;
    let mut confirms = Confirms::default();
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        let sending = Instant::now() < until;
        if sending {
            while published - confirms.through < in_flight {
                put_publish(&mut out, queue, payload, c.frame_max())?;
                published += 1;
            }
            c.send(&out).await?;
            out.clear();
        }
        if confirms.through == published {
            break;
        }
        // Take every confirm that has arrived; at least one.
        c.fill().await?;
        while let Some(f) = c.parse()? {
            match f.method() {
                Some((id::BASIC_ACK, mut args)) => {
                    let tag = ok(frames::get_u64(&mut args, "basic.ack"))?;
                    let multiple = ok(frames::get_u8(&mut args, "basic.ack"))? & 1 == 1;
                    confirms.ack(tag, multiple);
                }
                Some((id::BASIC_NACK, _)) => bail!("the broker nacked a message"),
                Some((got, args)) => return Err(unexpected(got, args)),
                None => bail!("unexpected frame of type {}", f.kind),
            }
        }
    }
    c.close().await;
    Ok(confirms.through)
}

/// Consumes `queue` with a prefetch of `prefetch`, acking every message on its own, until the
/// task is aborted; `count` is raised once per acked message.
pub async fn consume(
    url: String,
    queue: String,
    prefetch: u16,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<()> {
    use std::sync::atomic::Ordering;
    let mut c = RawConnection::open(&url).await?;
    c.call(id::BASIC_QOS, id::BASIC_QOS_OK, |b| {
        b.put_u32(0);
        b.put_u16(prefetch);
        b.put_u8(0);
        Ok(())
    })
    .await?;
    c.call(id::BASIC_CONSUME, id::BASIC_CONSUME_OK, |b| {
        b.put_u16(0);
        put_short_str(b, &queue)?;
        put_short_str(b, "")?;
        b.put_u8(0);
        frames::put_table(b, &[])
    })
    .await?;
    let mut acks = BytesMut::with_capacity(16 * 1024);
    // The delivery whose header and body frames are still to come.
    let mut pending: Option<u64> = None;
    let mut body_left = 0u64;
    loop {
        c.fill().await?;
        while let Some(f) = c.parse()? {
            match (f.kind, pending) {
                (FRAME_METHOD, None) => match f.method() {
                    Some((id::BASIC_DELIVER, mut args)) => {
                        ok(frames::get_short_str(&mut args))?;
                        pending = Some(ok(frames::get_u64(&mut args, "basic.deliver"))?);
                    }
                    Some((got, args)) => return Err(unexpected(got, args)),
                    None => bail!("unexpected frame"),
                },
                (FRAME_HEADER, Some(_)) => {
                    body_left = ok(frames::get_content_header(f.payload.clone()))?.0;
                }
                (FRAME_BODY, Some(_)) => {
                    body_left = body_left.saturating_sub(f.payload.len() as u64);
                }
                _ => bail!("unexpected frame of type {} mid-delivery", f.kind),
            }
            if let Some(tag) = pending
                && f.kind != FRAME_METHOD
                && body_left == 0
            {
                ok(put_method(&mut acks, 1, id::BASIC_ACK, |b| {
                    b.put_u64(tag);
                    b.put_u8(0);
                    Ok(())
                }))?;
                pending = None;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !acks.is_empty() {
            c.send(&acks).await?;
            acks.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_count_single_multiple_and_out_of_order_acks() {
        let mut c = Confirms::default();
        assert_eq!(c.ack(1, false), 1);
        assert_eq!(c.ack(3, false), 1);
        assert_eq!(c.ack(2, false), 3);
        assert_eq!(c.ack(6, false), 3);
        assert_eq!(c.ack(5, true), 6);
        assert_eq!(c.ack(9, true), 9);
        assert_eq!(c.ack(4, false), 9);
    }
}
