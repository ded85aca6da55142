//! The minimal client's handshake: the URL, the protocol header, PLAIN login, tuning and
//! `connection.open`, then request/reply calls on a connection its owner reads directly.
//!
//! Plain TCP only: the baseline measures the broker on this machine, not TLS. The broker's
//! refusals (bad credentials, unknown vhost) arrive as a `connection.close`; they become errors
//! that quote its reply code and text.

use std::time::Duration;

use anyhow::{Result, anyhow};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::frames::{
    self, FRAME_HEARTBEAT, Frame, FrameError, Value, id, put_method, put_short_str,
};

/// Frames up to this size are accepted and sent; RabbitMQ's default is 128 KiB.
pub const FRAME_MAX: u32 = 131_072;

/// Where and as whom to connect, from an `amqp://` or `amqps://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

impl std::fmt::Debug for Endpoint {
    /// Everything but the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("vhost", &self.vhost)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Host, port, credentials and vhost of an `amqp://` URL, with RabbitMQ's defaults for
    /// what it leaves out (guest/guest, port 5672, vhost `/`).
    pub fn parse(url: &str) -> Result<Self> {
        let u = url::Url::parse(url).map_err(|e| anyhow!("AMQP URL: {e}"))?;
        if u.scheme() != "amqp" {
            return Err(anyhow!(
                "AMQP URL scheme {:?}: the minimal client speaks amqp:// only",
                u.scheme()
            ));
        }
        // Percent-decoding only: a `+` in a URL's userinfo or path is a plus, not a space.
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = if u.username().is_empty() {
            "guest".to_owned()
        } else {
            decode(u.username())
        };
        let password = u.password().map_or_else(|| "guest".to_owned(), decode);
        let vhost = match u.path().strip_prefix('/') {
            None | Some("") => "/".to_owned(),
            Some(v) => decode(v),
        };
        let host = match u.host_str() {
            None | Some("") => "127.0.0.1".to_owned(),
            Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        };
        Ok(Self {
            host,
            port: u.port().unwrap_or(5672),
            user,
            password,
            vhost,
        })
    }
}

/// A logged-in connection, read and written by its owner directly (before any task takes
/// it over).
pub struct Opened {
    pub reader: OwnedReadHalf,
    pub writer: OwnedWriteHalf,
    /// Bytes read but not yet decoded.
    pub buf: BytesMut,
    /// Negotiated maximum frame size.
    pub frame_max: u32,
    /// Negotiated heartbeat in seconds (0: none).
    pub heartbeat: u16,
}

/// A broker-side close's reply code and text.
pub fn close_reason(mut args: Bytes) -> String {
    match (
        frames::get_u16(&mut args, "close"),
        frames::get_short_str(&mut args),
    ) {
        (Ok(code), Ok(text)) => format!("{code} {text}"),
        _ => "no reason given".into(),
    }
}

fn codec(e: FrameError) -> anyhow::Error {
    anyhow!("broker protocol error: {e}")
}

fn io(e: std::io::Error) -> anyhow::Error {
    anyhow!("broker connection: {e}")
}

impl Opened {
    /// Connects, logs in with PLAIN and opens the vhost. `name` is shown in the management UI;
    /// `heartbeat` is the most Herald wants, in seconds (0: none).
    pub async fn connect(
        endpoint: &Endpoint,
        name: &str,
        heartbeat: u16,
        timeout: Duration,
    ) -> Result<Self> {
        match tokio::time::timeout(timeout, Self::connect_now(endpoint, name, heartbeat)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!(
                "connecting to the broker at {}:{} timed out after {timeout:?}",
                endpoint.host,
                endpoint.port
            )),
        }
    }

    async fn connect_now(endpoint: &Endpoint, name: &str, heartbeat: u16) -> Result<Self> {
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| {
                anyhow!(
                    "connecting to the broker at {}:{}: {e}",
                    endpoint.host,
                    endpoint.port
                )
            })?;
        stream.set_nodelay(true).map_err(io)?;
        let (reader, writer) = stream.into_split();
        let mut c = Self {
            reader,
            writer,
            buf: BytesMut::with_capacity(64 * 1024),
            frame_max: FRAME_MAX,
            heartbeat: 0,
        };
        c.send(frames::PROTOCOL_HEADER).await?;
        let mut start = c.expect(0, id::CONNECTION_START).await?;
        let what = "connection.start";
        frames::get_u8(&mut start, what).map_err(codec)?;
        frames::get_u8(&mut start, what).map_err(codec)?;
        frames::get_table(&mut start).map_err(codec)?;
        let mechanisms = frames::get_long_str(&mut start).map_err(codec)?;
        if !mechanisms.split(|b| *b == b' ').any(|m| m == b"PLAIN") {
            return Err(anyhow!(
                "the broker offers no PLAIN login (it offers {:?})",
                String::from_utf8_lossy(&mechanisms)
            ));
        }
        let mut out = BytesMut::new();
        put_method(&mut out, 0, id::CONNECTION_START_OK, |b| {
            frames::put_table(b, &client_properties(name))?;
            put_short_str(b, "PLAIN")?;
            let mut response =
                Vec::with_capacity(endpoint.user.len() + endpoint.password.len() + 2);
            response.push(0);
            response.extend_from_slice(endpoint.user.as_bytes());
            response.push(0);
            response.extend_from_slice(endpoint.password.as_bytes());
            frames::put_long_str(b, &response)?;
            put_short_str(b, "en_US")
        })
        .map_err(codec)?;
        c.send(&out).await?;

        let mut tune = c.expect(0, id::CONNECTION_TUNE).await?;
        let what = "connection.tune";
        let channel_max = frames::get_u16(&mut tune, what).map_err(codec)?;
        let frame_max = frames::get_u32(&mut tune, what).map_err(codec)?;
        let offered = frames::get_u16(&mut tune, what).map_err(codec)?;
        c.frame_max = match frame_max {
            0 => FRAME_MAX,
            n => n.clamp(frames::FRAME_MIN_SIZE, FRAME_MAX),
        };
        c.heartbeat = negotiate_heartbeat(offered, heartbeat);
        let mut out = BytesMut::new();
        put_method(&mut out, 0, id::CONNECTION_TUNE_OK, |b| {
            b.put_u16(channel_max);
            b.put_u32(c.frame_max);
            b.put_u16(c.heartbeat);
            Ok(())
        })
        .map_err(codec)?;
        put_method(&mut out, 0, id::CONNECTION_OPEN, |b| {
            put_short_str(b, &endpoint.vhost)?;
            put_short_str(b, "")?;
            b.put_u8(0);
            Ok(())
        })
        .map_err(codec)?;
        c.send(&out).await?;
        c.expect(0, id::CONNECTION_OPEN_OK).await?;
        Ok(c)
    }

    /// Writes bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes).await.map_err(io)?;
        self.writer.flush().await.map_err(io)
    }

    /// Sends a method and waits for its reply on the same channel.
    pub async fn call(
        &mut self,
        channel: u16,
        request: (u16, u16),
        reply: (u16, u16),
        args: impl FnOnce(&mut BytesMut) -> Result<(), FrameError>,
    ) -> Result<Bytes> {
        let mut out = BytesMut::new();
        put_method(&mut out, channel, request, args).map_err(codec)?;
        self.send(&out).await?;
        self.expect(channel, reply).await
    }

    /// The next frame other than a heartbeat, reading as needed.
    pub async fn next_frame(&mut self) -> Result<Frame> {
        loop {
            while let Some(f) = frames::decode(&mut self.buf, self.frame_max).map_err(codec)? {
                if f.kind != FRAME_HEARTBEAT {
                    return Ok(f);
                }
            }
            let n = self.reader.read_buf(&mut self.buf).await.map_err(io)?;
            if n == 0 {
                return Err(anyhow!("the broker closed the connection"));
            }
        }
    }

    /// Waits for one method on `channel`; a close (of the connection or that channel) is an
    /// error quoting the broker's reason, anything else an error naming it.
    pub async fn expect(&mut self, channel: u16, want: (u16, u16)) -> Result<Bytes> {
        let f = self.next_frame().await?;
        match f.method() {
            Some((got, args)) if got == want && f.channel == channel => Ok(args),
            Some((id::CONNECTION_CLOSE, args)) => Err(anyhow!(
                "the broker closed the connection: {}",
                close_reason(args)
            )),
            Some((id::CHANNEL_CLOSE, args)) => Err(anyhow!(
                "the broker closed channel {}: {}",
                f.channel,
                close_reason(args)
            )),
            Some((got, _)) => Err(anyhow!(
                "broker protocol error: expected method {want:?} on channel {channel}, got \
                 {got:?} on channel {}",
                f.channel
            )),
            None => Err(anyhow!(
                "broker protocol error: expected method {want:?}, got a frame of type {} on \
                 channel {}",
                f.kind,
                f.channel
            )),
        }
    }
}

/// The lower of the two offers; the broker's zero means "as the client likes", ours means
/// none (a connection that lives seconds, as in the bench).
fn negotiate_heartbeat(broker: u16, ours: u16) -> u16 {
    match (broker, ours) {
        (_, 0) => 0,
        (0, x) => x,
        (a, b) => a.min(b),
    }
}

/// What the broker shows of this client, and the extensions it relies on: `connection.blocked`
/// (told when a resource alarm holds publishes), `authentication_failure_close` (a refused
/// login is a close with a reason, not a dropped socket) and `publisher_confirms`.
fn client_properties(name: &str) -> Vec<(String, Value)> {
    let text = |s: &str| Value::LongStr(Bytes::copy_from_slice(s.as_bytes()));
    let capabilities = [
        "publisher_confirms",
        "basic.nack",
        "connection.blocked",
        "authentication_failure_close",
        "consumer_cancel_notify",
    ]
    .into_iter()
    .map(|c| (c.to_owned(), Value::Bool(true)))
    .collect();
    vec![
        ("product".into(), text("herald")),
        ("version".into(), text(env!("CARGO_PKG_VERSION"))),
        ("connection_name".into(), text(name)),
        ("capabilities".into(), Value::Table(capabilities)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_fall_back_to_rabbitmq_defaults_and_decode_the_vhost() {
        let e = Endpoint::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(
            (
                e.host.as_str(),
                e.port,
                e.user.as_str(),
                e.password.as_str()
            ),
            ("127.0.0.1", 5672, "guest", "guest")
        );
        assert_eq!(e.vhost, "/");
        let e = Endpoint::parse("amqp://localhost").unwrap();
        assert_eq!(
            (e.port, e.user.as_str(), e.vhost.as_str()),
            (5672, "guest", "/")
        );
        let e = Endpoint::parse("amqp://u:p%40ss@h:5673/prod%2Fwebhooks").unwrap();
        assert_eq!(
            (e.port, e.password.as_str(), e.vhost.as_str()),
            (5673, "p@ss", "prod/webhooks")
        );
        let e = Endpoint::parse("amqp://svc:a+b@h/v+1").unwrap();
        assert_eq!((e.password.as_str(), e.vhost.as_str()), ("a+b", "v+1"));
        let e = Endpoint::parse("amqp://[::1]:5672/").unwrap();
        assert_eq!(e.host, "::1");
        assert!(Endpoint::parse("amqps://h").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }

    #[test]
    fn the_password_never_prints() {
        let e = Endpoint::parse("amqp://herald:s3cr3t-pw@h/").unwrap();
        let shown = format!("{e:?}");
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        assert!(shown.contains("herald"));
    }

    #[test]
    fn heartbeats_take_the_lower_non_zero_offer() {
        assert_eq!(negotiate_heartbeat(60, 30), 30);
        assert_eq!(negotiate_heartbeat(10, 30), 10);
        assert_eq!(negotiate_heartbeat(0, 30), 30);
        assert_eq!(negotiate_heartbeat(60, 0), 0);
        assert_eq!(negotiate_heartbeat(0, 0), 0);
    }
}
