//! The connection against a scripted broker on a local socket: what happens when the real one
//! misbehaves in ways RabbitMQ on localhost will not show on demand (a dropped socket, silence,
//! a forced close). The rule under test: a waiting call always ends, with an error that says
//! why, and the connection reports itself broken.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{ConfirmConnection, ConsumerConnection, Endpoint, HEARTBEAT_SECS};
use crate::error::Error;
use crate::frames::{self, FRAME_HEARTBEAT, Frame, id, put_method, put_short_str};
use crate::publisher::Outgoing;

/// The broker's side of one connection, past the handshake.
struct Script {
    stream: TcpStream,
    buf: BytesMut,
}

impl Script {
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = frames::decode(&mut self.buf, 0).unwrap() {
                return Some(f);
            }
            if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    /// The next method, skipping heartbeats, with its arguments.
    async fn method(&mut self) -> ((u16, u16), Bytes) {
        loop {
            let f = self.frame().await.expect("a frame");
            if let Some(m) = f.method() {
                return m;
            }
        }
    }

    async fn send(&mut self, channel: u16, method: (u16, u16), args: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::new();
        put_method(&mut out, channel, method, |b| {
            args(b);
            Ok(())
        })
        .unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// Accepts one client and plays the handshake, offering `heartbeat` seconds.
    async fn accept(listener: &TcpListener, heartbeat: u16) -> Self {
        let (stream, _) = listener.accept().await.unwrap();
        let mut s = Self {
            stream,
            buf: BytesMut::new(),
        };
        let mut header = [0u8; 8];
        s.stream.read_exact(&mut header).await.unwrap();
        assert_eq!(&header, frames::PROTOCOL_HEADER);
        s.send(0, id::CONNECTION_START, |b| {
            b.put_u8(0);
            b.put_u8(9);
            frames::put_table(b, &[]).unwrap();
            frames::put_long_str(b, b"AMQPLAIN PLAIN").unwrap();
            frames::put_long_str(b, b"en_US").unwrap();
        })
        .await;
        assert_eq!(s.method().await.0, id::CONNECTION_START_OK);
        s.send(0, id::CONNECTION_TUNE, |b| {
            b.put_u16(2047);
            b.put_u32(131_072);
            b.put_u16(heartbeat);
        })
        .await;
        let (tune_ok, mut args) = s.method().await;
        assert_eq!(tune_ok, id::CONNECTION_TUNE_OK);
        args.advance_by(6);
        let wanted = match heartbeat {
            0 => HEARTBEAT_SECS,
            offered => offered.min(HEARTBEAT_SECS),
        };
        assert_eq!(frames::get_u16(&mut args, "heartbeat").unwrap(), wanted);
        assert_eq!(s.method().await.0, id::CONNECTION_OPEN);
        s.send(0, id::CONNECTION_OPEN_OK, |b| put_short_str(b, "").unwrap())
            .await;
        assert_eq!(s.method().await.0, id::CHANNEL_OPEN);
        s.send(1, id::CHANNEL_OPEN_OK, |b| {
            frames::put_long_str(b, b"").unwrap()
        })
        .await;
        s
    }

    /// The confirm.select a publishing client sends next.
    async fn confirm_mode(mut self) -> Self {
        assert_eq!(self.method().await.0, id::CONFIRM_SELECT);
        self.send(1, id::CONFIRM_SELECT_OK, |_| {}).await;
        self
    }

    /// The qos and consume a consuming client sends next.
    async fn consuming(mut self) -> Self {
        assert_eq!(self.method().await.0, id::BASIC_QOS);
        self.send(1, id::BASIC_QOS_OK, |_| {}).await;
        assert_eq!(self.method().await.0, id::BASIC_CONSUME);
        self.send(1, id::BASIC_CONSUME_OK, |b| {
            put_short_str(b, "ctag").unwrap()
        })
        .await;
        self
    }

    async fn heartbeat(&mut self) {
        let mut out = BytesMut::new();
        frames::put_heartbeat(&mut out);
        self.stream.write_all(&out).await.unwrap();
    }
}

trait AdvanceBy {
    fn advance_by(&mut self, n: usize);
}

impl AdvanceBy for Bytes {
    fn advance_by(&mut self, n: usize) {
        bytes::Buf::advance(self, n);
    }
}

async fn client_and_broker(heartbeat: u16) -> (ConfirmConnection, Script) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::parse(&format!(
        "amqp://guest:guest@{}/",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    let (client, script) = tokio::join!(ConfirmConnection::open(&endpoint, "test", 1), async {
        Script::accept(&listener, heartbeat)
            .await
            .confirm_mode()
            .await
    });
    (client.unwrap(), script)
}

fn message() -> Vec<Outgoing> {
    vec![Outgoing {
        exchange: String::new(),
        routing_key: "q".into(),
        body: b"{}".to_vec(),
        headers: Vec::new(),
    }]
}

fn unavailable(outcome: Result<(), Error>) -> String {
    match outcome {
        Err(Error::Unavailable(why)) => why,
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dropped_socket_fails_the_waiting_call() {
    let (client, mut broker) = client_and_broker(0).await;
    let messages = message();
    let publish = client.publish(0, &messages);
    let broker_side = async move {
        assert_eq!(broker.method().await.0, id::BASIC_PUBLISH);
        drop(broker);
    };
    let (outcome, ()) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(publish, broker_side)
    })
    .await
    .expect("the call ends");
    unavailable(outcome);
    assert!(!client.is_open());
}

#[tokio::test]
async fn a_confirm_ends_the_call_and_a_forced_close_is_answered_and_reported() {
    let (client, mut broker) = client_and_broker(0).await;
    let messages = message();
    let broker_side = async {
        assert_eq!(broker.method().await.0, id::BASIC_PUBLISH);
        broker
            .send(1, id::BASIC_ACK, |b| {
                b.put_u64(1);
                b.put_u8(0);
            })
            .await;
    };
    let (outcome, ()) = tokio::join!(client.publish(0, &messages), broker_side);
    outcome.unwrap();

    let broker_side = async {
        assert_eq!(broker.method().await.0, id::BASIC_PUBLISH);
        broker
            .send(0, id::CONNECTION_CLOSE, |b| {
                b.put_u16(320);
                put_short_str(b, "CONNECTION_FORCED - broker shutdown").unwrap();
                b.put_u16(0);
                b.put_u16(0);
            })
            .await;
        broker.method().await.0
    };
    let (outcome, reply) = tokio::join!(client.publish(0, &messages), broker_side);
    assert_eq!(
        reply,
        id::CONNECTION_CLOSE_OK,
        "the client answers the close"
    );
    let why = unavailable(outcome);
    assert!(why.contains("320 CONNECTION_FORCED"), "{why}");
    assert!(!client.is_open());
}

#[tokio::test]
async fn a_silent_broker_is_declared_dead_after_two_heartbeats_and_ours_keep_coming() {
    let (client, mut broker) = client_and_broker(1).await;
    let started = Instant::now();
    // The client heartbeats about every half second while idle.
    let mut beats = 0;
    while beats < 2 {
        let f = tokio::time::timeout(Duration::from_secs(3), broker.frame())
            .await
            .expect("a heartbeat within the interval")
            .expect("the socket is open");
        assert_eq!(f.kind, FRAME_HEARTBEAT, "nothing but heartbeats while idle");
        beats += 1;
    }
    // The broker says nothing at all: a call in flight fails once two intervals passed.
    let messages = message();
    let why = unavailable(
        tokio::time::timeout(Duration::from_secs(6), client.publish(0, &messages))
            .await
            .expect("the call ends"),
    );
    assert!(why.contains("no heartbeat"), "{why}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(!client.is_open());
}

#[tokio::test]
async fn heartbeats_between_the_frames_of_a_delivery_change_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::parse(&format!(
        "amqp://guest:guest@{}/",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    let (opened, mut broker) = tokio::join!(
        ConsumerConnection::open(&endpoint, "test", "q", 10),
        async { Script::accept(&listener, 0).await.consuming().await }
    );
    let (consumer, mut deliveries) = opened.unwrap();
    broker.heartbeat().await;
    broker
        .send(1, id::BASIC_DELIVER, |b| {
            put_short_str(b, "ctag").unwrap();
            b.put_u64(1);
            b.put_u8(0);
            put_short_str(b, "").unwrap();
            put_short_str(b, "q").unwrap();
        })
        .await;
    broker.heartbeat().await;
    let mut content = BytesMut::new();
    let props = frames::Properties::default();
    frames::put_content(&mut content, 1, &props, b"{\"a\":1}", 4096).unwrap();
    // The header frame, a heartbeat, then the body frame (7 bytes of body, 8 of framing).
    let header_len = content.len() - (8 + 7);
    broker
        .stream
        .write_all(&content[..header_len])
        .await
        .unwrap();
    broker.heartbeat().await;
    broker
        .stream
        .write_all(&content[header_len..])
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), deliveries.recv())
        .await
        .expect("a delivery")
        .expect("the connection is up");
    assert_eq!((d.tag, &d.body[..]), (1, &b"{\"a\":1}"[..]));
    broker.heartbeat().await;
    consumer.ack(1, false).unwrap();
    let (ack, mut args) = broker.method().await;
    assert_eq!(ack, id::BASIC_ACK);
    assert_eq!(frames::get_u64(&mut args, "tag").unwrap(), 1);
    assert!(consumer.is_open(), "{:?}", consumer.broken());
}
