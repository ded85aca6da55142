//! Herald's broker seam (`herald_broker::{Publisher, Consumer, Settler, Acks}`) against the real
//! RabbitMQ.
//!
//! Consuming: deliveries arrive whole with their string headers; a multiple ack settles every
//! delivery below it; requeued deliveries come back redelivered, rejected ones do not (dropped,
//! or dead-lettered where the queue says so, with where, why and when they died); what is
//! unacked when a consumer closes goes back to the queue; after a cancel nothing new arrives
//! but what was received can still be settled; a missing queue is an error that names it.
//!
//! Publishing: concurrent calls over several channels arrive exactly once as sent; a body
//! larger than a frame arrives whole; an unroutable message fails its own call and no other; a
//! refused login fails the connect with the broker's reason; a re-declaration recreates a
//! deleted queue, however many callers ask for it at once.
//!
//! Test queues are `herald_tests` queues with unique names (exclusive, or expiring a minute
//! after their last use); a test that needs Herald's topology declares it under a unique prefix
//! and removes it when it ends, even when it fails.

use std::time::Duration;

use futures::future::join_all;
use herald_broker::{
    AckPolicy, Acks, Admin, Consumer, Delivery, Error, Outgoing, Publisher, QueueType, Topology,
};
use herald_tests::AMQP_URL;
use lapin::Channel;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use lapin::types::AMQPValue;

/// Removes what a test installation named `0` created (schema, queues and exchanges, Redis
/// keys) when dropped, even when the test panicked.
pub(crate) struct Cleanup(pub(crate) String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(herald_tests::cleanup(&name, &[]));
        })
        .join();
    }
}

/// Herald's topology under a unique prefix, removed when the test ends.
struct Installed {
    topology: Topology,
    _cleanup: Cleanup,
}

impl Installed {
    fn new() -> Self {
        let prefix = format!("herald-bt-{}", uuid::Uuid::new_v4().simple());
        Self {
            topology: Topology::new(prefix.clone(), QueueType::Classic),
            _cleanup: Cleanup(prefix),
        }
    }

    /// A publisher on this topology (declared on connect) with `channels` confirm channels.
    async fn publisher(&self, channels: usize) -> Publisher {
        Publisher::connect(
            AMQP_URL,
            "herald-tests-broker",
            self.topology.clone(),
            channels,
        )
        .await
        .expect("publisher connects")
    }
}

/// A message for `queue` through the default exchange.
fn to_queue(queue: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Outgoing {
    Outgoing {
        exchange: String::new(),
        routing_key: queue.to_owned(),
        body,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// A body of `len` bytes that shows where a truncation or a reordering happened.
fn large_body(len: u32) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Publishes `bodies` to `queue` with a trace header, confirmed, through Herald's publisher.
async fn fill(publisher: &Publisher, queue: &str, bodies: &[&[u8]]) {
    let messages: Vec<Outgoing> = bodies
        .iter()
        .map(|b| to_queue(queue, b.to_vec(), &[("traceparent", "00-11-22-01")]))
        .collect();
    publisher.publish(&messages).await.expect("confirmed");
}

/// A queue other connections may consume, holding `bodies` (published through Herald's
/// publisher with a trace header).
async fn queue_holding(bodies: &[&[u8]]) -> herald_tests::TestQueue {
    let queue = herald_tests::shared_queue("broker").await;
    let installed = Installed::new();
    let publisher = installed.publisher(1).await;
    fill(&publisher, &queue.2, bodies).await;
    publisher.close().await;
    queue
}

async fn consumer(queue: &str, prefetch: u16) -> Consumer {
    Consumer::open(AMQP_URL, "herald-tests-consumer", None, queue, prefetch)
        .await
        .expect("consumer opens")
}

async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery in time")
        .expect("the consumer is running")
}

/// Fails if a delivery arrives within `wait` (a consumer whose session ended counts as quiet).
async fn nothing_for(consumer: &mut Consumer, wait: Duration) {
    if let Ok(Ok(d)) = tokio::time::timeout(wait, consumer.next()).await {
        panic!("unexpected delivery {} ({:?})", d.tag, d.body);
    }
}

/// Messages ready in `queue`, as Herald's housekeeping reads them.
async fn ready(queue: &str) -> u32 {
    let admin = Admin::connect(AMQP_URL, "herald-tests-depth")
        .await
        .expect("broker reachable");
    let states = admin.queues(&[queue.to_owned()]).await;
    admin.close().await;
    states.first().expect("the queue exists").messages
}

/// Closes `consumer`, then checks that `queue` holds `n` ready messages a moment later: what
/// the consumer left unsettled went back.
async fn close_leaves(consumer: Consumer, queue: &str, n: u32, why: &str) {
    consumer.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ready(queue).await, n, "{why}");
}

/// Waits until `queue` holds `n` ready messages (the broker requeues asynchronously).
async fn ready_becomes(queue: &str, n: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = ready(queue).await;
        if now == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue} holds {now} ready, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message in the queue, in order, with its properties (taken without ack).
async fn drain(ch: &Channel, queue: &str) -> Vec<BasicGetMessage> {
    let mut got = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        got.push(m);
    }
    got
}

fn text(m: &BasicGetMessage) -> String {
    String::from_utf8(m.delivery.data.clone()).unwrap()
}

#[tokio::test]
async fn deliveries_arrive_whole_with_their_headers_and_a_multiple_ack_settles_all_below() {
    let mut bodies: Vec<Vec<u8>> = (0..9)
        .map(|i| format!("{{\"i\":{i}}}").into_bytes())
        .collect();
    bodies.push(large_body(300_000));
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    let (_conn, _ch, q) = queue_holding(&refs).await;

    let mut c = consumer(&q, 100).await;
    let mut got = Vec::new();
    for _ in 0..bodies.len() {
        got.push(next(&mut c).await);
    }
    let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
    assert_eq!(tags, (1..=10).collect::<Vec<_>>());
    let received: Vec<Vec<u8>> = got.iter().map(|d| d.body.to_vec()).collect();
    assert_eq!(received, bodies, "in order, the large one across frames");
    for d in &got {
        assert!(!d.redelivered, "first delivery of {}", d.tag);
        assert_eq!(d.last_death, None);
        assert_eq!(
            d.headers,
            [("traceparent".to_owned(), "00-11-22-01".to_owned())]
        );
    }
    // One multiple ack of the last tag settles the nine below it too.
    c.settler().ack(10, true).await.unwrap();
    close_leaves(c, &q, 0, "all acked, so nothing came back").await;
}

/// On a queue without a dead-letter exchange a rejected delivery is dropped; a requeued one
/// comes back, flagged as redelivered.
#[tokio::test]
async fn requeued_deliveries_come_back_redelivered_rejected_ones_do_not() {
    let (_conn, _ch, q) = queue_holding(&[b"keep", b"again", b"poison"]).await;

    let mut c = consumer(&q, 10).await;
    let settler = c.settler();
    let keep = next(&mut c).await;
    let again = next(&mut c).await;
    let poison = next(&mut c).await;
    assert_eq!(
        [&keep.body[..], &again.body[..], &poison.body[..]],
        [&b"keep"[..], b"again", b"poison"]
    );
    settler.ack(keep.tag, false).await.unwrap();
    settler.reject(poison.tag).await.unwrap();
    settler.requeue(again.tag).await.unwrap();
    let back = next(&mut c).await;
    assert_eq!(&back.body[..], b"again");
    assert!(back.redelivered, "a requeued delivery is flagged");
    settler.ack(back.tag, false).await.unwrap();
    nothing_for(&mut c, Duration::from_millis(300)).await;
    close_leaves(c, &q, 0, "the rejected one did not come back").await;
}

#[tokio::test]
async fn unacked_deliveries_go_back_when_the_consumer_closes() {
    let (_conn, _ch, q) = queue_holding(&[b"1", b"2", b"3"]).await;

    let mut c = consumer(&q, 2).await;
    let settler = c.settler();
    let first = next(&mut c).await;
    let _second = next(&mut c).await;
    // The prefetch window holds the third back until one is settled.
    nothing_for(&mut c, Duration::from_millis(300)).await;
    settler.ack(first.tag, false).await.unwrap();
    let third = next(&mut c).await;
    assert_eq!(&third.body[..], b"3");
    c.close().await;
    assert!(
        settler.ack(third.tag, false).await.is_err(),
        "settling after close fails"
    );
    ready_becomes(&q, 2).await;

    // They come back to the next consumer, flagged as redelivered.
    let mut again = consumer(&q, 10).await;
    let a = next(&mut again).await;
    let b = next(&mut again).await;
    assert_eq!([&a.body[..], &b.body[..]], [&b"2"[..], b"3"]);
    assert!(a.redelivered && b.redelivered);
    again.settler().ack(b.tag, true).await.unwrap();
    again.close().await;
}

/// The dispatcher's stop: cancel, then settle what is in flight through [`Acks`].
#[tokio::test]
async fn after_a_cancel_nothing_new_arrives_and_received_deliveries_can_still_be_settled() {
    let (_conn, _ch, q) = herald_tests::shared_queue("broker").await;
    let installed = Installed::new();
    let publisher = installed.publisher(1).await;
    fill(&publisher, &q, &[b"1"]).await;

    let mut c = consumer(&q, 10).await;
    let acks = Acks::start(c.settler(), AckPolicy::default());
    let first = next(&mut c).await;
    acks.received(first.tag);
    c.cancel().await;
    fill(&publisher, &q, &[b"2"]).await;
    publisher.close().await;
    nothing_for(&mut c, Duration::from_millis(300)).await;
    acks.ack(first.tag);
    acks.close().await;
    let why = "only the one published after the cancel: the one received was acked";
    close_leaves(c, &q, 1, why).await;
}

#[tokio::test]
async fn a_missing_queue_is_an_error_that_names_it() {
    let missing = format!("herald-no-such-queue-{}", uuid::Uuid::new_v4().simple());
    let err = Consumer::open(AMQP_URL, "herald-tests-consumer", None, &missing, 1)
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains(&missing), "{text}");
    assert!(text.contains("NOT_FOUND"), "{text}");
}

/// A delivery rejected from a work queue (which dead-letters to Herald's dead exchange)
/// arrives on the dead-letter queue with its latest death read from RabbitMQ's `x-death`:
/// what the ledger's dead-letter records go by.
#[tokio::test]
async fn a_dead_lettered_delivery_says_which_queue_why_and_when_it_died() {
    let installed = Installed::new();
    let topology = installed.topology.clone();
    let mut work = Consumer::open(
        AMQP_URL,
        "herald-tests-dl",
        Some(&topology),
        &topology.work_queue(),
        1,
    )
    .await
    .expect("consumer opens");
    let publisher = installed.publisher(1).await;
    fill(&publisher, &topology.work_queue(), &[b"poison"]).await;
    publisher.close().await;
    let d = next(&mut work).await;
    assert_eq!(d.last_death, None, "not dead-lettered yet");
    work.settler().reject(d.tag).await.unwrap();
    work.close().await;

    let mut dead = consumer(&topology.dead_queue(), 1).await;
    let d = next(&mut dead).await;
    assert_eq!(&d.body[..], b"poison");
    assert!(
        d.headers
            .contains(&("traceparent".to_owned(), "00-11-22-01".to_owned())),
        "{:?}",
        d.headers
    );
    let death = d.last_death.clone().expect("the x-death entry");
    assert_eq!(death.queue, topology.work_queue());
    assert_eq!(death.reason, "rejected");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now.abs_diff(death.time) < 120,
        "died at {}, now {now}",
        death.time
    );
    dead.settler().ack(d.tag, false).await.unwrap();
    dead.close().await;
}

#[tokio::test]
async fn concurrent_publishes_on_several_channels_arrive_exactly_once_as_sent() {
    let (_conn, ch, q) = herald_tests::exclusive_queue("broker").await;
    let installed = Installed::new();
    let publisher = installed.publisher(3).await;
    // 40 concurrent calls of 25 messages each, taking the three channels in turn.
    let calls: Vec<Vec<Outgoing>> = (0..40)
        .map(|call| {
            (0..25)
                .map(|i| {
                    let body = format!("{{\"call\":{call},\"i\":{i}}}").into_bytes();
                    to_queue(&q, body, &[("traceparent", "00-abc-def-01")])
                })
                .collect()
        })
        .collect();
    for outcome in join_all(calls.iter().map(|m| publisher.publish(m))).await {
        outcome.expect("confirmed");
    }
    assert!(publisher.is_up());
    publisher.close().await;

    let got = drain(&ch, &q).await;
    assert_eq!(got.len(), 1000);
    let mut bodies: Vec<String> = got.iter().map(text).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 1000, "no message twice");
    for m in &got {
        let props = &m.delivery.properties;
        assert_eq!(*props.delivery_mode(), Some(2), "persistent");
        assert_eq!(
            props.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        let headers = props.headers().as_ref().expect("headers");
        assert_eq!(
            headers.inner().get("traceparent"),
            Some(&AMQPValue::LongString("00-abc-def-01".into()))
        );
    }
    // Within one call (one channel), order is kept.
    let of_call_7: Vec<String> = got
        .iter()
        .map(text)
        .filter(|b| b.starts_with("{\"call\":7,"))
        .collect();
    let expected: Vec<String> = (0..25)
        .map(|i| format!("{{\"call\":7,\"i\":{i}}}"))
        .collect();
    assert_eq!(of_call_7, expected);
}

#[tokio::test]
async fn a_body_larger_than_a_frame_arrives_whole() {
    let (conn, ch, q) = herald_tests::exclusive_queue("broker").await;
    let frame_max = conn.configuration().frame_max();
    let body = large_body(400_000);
    assert!(body.len() > 3 * frame_max as usize, "frame_max {frame_max}");
    let installed = Installed::new();
    let publisher = installed.publisher(1).await;
    publisher
        .publish(&[to_queue(&q, body.clone(), &[])])
        .await
        .expect("confirmed");
    publisher.close().await;
    let got = drain(&ch, &q).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].delivery.data == body, "the body arrived whole");
}

/// One channel, one call at a time: the call holding an unroutable message fails, the calls
/// before and after it on the same channel are confirmed, and the connection stays up.
#[tokio::test]
async fn an_unroutable_message_fails_its_own_call_and_no_other() {
    let (_conn, ch, q) = herald_tests::exclusive_queue("broker").await;
    let installed = Installed::new();
    let publisher = installed.publisher(1).await;
    let nowhere = format!("herald-nowhere-{}", uuid::Uuid::new_v4().simple());
    publisher
        .publish(&[to_queue(&q, b"1".to_vec(), &[])])
        .await
        .expect("the call before is confirmed");
    match publisher
        .publish(&[to_queue(&nowhere, b"lost".to_vec(), &[])])
        .await
    {
        Err(Error::Unroutable { routing_key, .. }) => assert_eq!(routing_key, nowhere),
        other => panic!("expected unroutable, got {other:?}"),
    }
    let mixed = [
        to_queue(&q, b"2".to_vec(), &[]),
        to_queue(&nowhere, b"lost".to_vec(), &[]),
    ];
    assert!(matches!(
        publisher.publish(&mixed).await,
        Err(Error::Unroutable { .. })
    ));
    // Many unroutable messages in one call: one failed call, the channel still fine.
    let all_lost: Vec<Outgoing> = (0..50)
        .map(|_| to_queue(&nowhere, b"x".to_vec(), &[]))
        .collect();
    assert!(matches!(
        publisher.publish(&all_lost).await,
        Err(Error::Unroutable { .. })
    ));
    assert!(publisher.is_up(), "a return does not break the connection");
    publisher
        .publish(&[to_queue(&q, b"3".to_vec(), &[])])
        .await
        .expect("the call after is confirmed");
    publisher.close().await;
    let bodies: Vec<String> = drain(&ch, &q).await.iter().map(text).collect();
    assert_eq!(bodies, ["1", "2", "3"]);
}

/// Concurrent calls: only the call holding the unroutable message may fail, and its error
/// names that message.
///
/// A `basic.return` carries no delivery tag, and lapin 4.12 hands the oldest waiting return to
/// whichever confirm it completes next (`Acknowledgements::complete_pending` in lapin's
/// `src/acknowledgement.rs`), walking a `multiple` ack's tags in `HashMap` order. With two calls
/// on one channel the return could land on the other call, and the call that held the
/// unroutable message be confirmed as if delivered: the publisher gives each call a channel of
/// its own until its confirms arrive (here a pool of one, so the calls take turns).
#[tokio::test]
async fn concurrent_calls_on_one_channel_each_learn_only_their_own_unroutable_message() {
    let (_conn, ch, q) = herald_tests::exclusive_queue("broker").await;
    let installed = Installed::new();
    let publisher = installed.publisher(1).await;
    let nowhere = format!("herald-nowhere-{}", uuid::Uuid::new_v4().simple());
    for round in 0..50 {
        let ok_first = [to_queue(&q, b"1".to_vec(), &[])];
        let mixed = [
            to_queue(&q, b"2".to_vec(), &[]),
            to_queue(&nowhere, b"lost".to_vec(), &[]),
        ];
        let ok_last = [to_queue(&q, b"3".to_vec(), &[])];
        let (a, b, c) = tokio::join!(
            publisher.publish(&ok_first),
            publisher.publish(&mixed),
            publisher.publish(&ok_last)
        );
        assert!(a.is_ok(), "round {round}: the call before failed: {a:?}");
        assert!(c.is_ok(), "round {round}: the call after failed: {c:?}");
        match b {
            Err(Error::Unroutable { routing_key, .. }) => {
                assert_eq!(routing_key, nowhere, "round {round}: names another message")
            }
            other => panic!("round {round}: expected unroutable, got {other:?}"),
        }
    }
    publisher.close().await;
    assert_eq!(
        drain(&ch, &q).await.len(),
        150,
        "every routable message arrived"
    );
}

#[tokio::test]
async fn a_refused_login_fails_the_connect_with_the_reason() {
    let installed = Installed::new();
    let url = AMQP_URL.replace("guest:guest@", "guest:not-the-password@");
    let err = Publisher::connect(&url, "herald-tests-login", installed.topology.clone(), 1)
        .await
        .err()
        .expect("a wrong password is refused");
    assert!(err.is_unavailable(), "expected unavailable, got {err:?}");
    let why = err.to_string();
    assert!(why.contains("ACCESS_REFUSED"), "{why}");
    assert!(!why.contains("not-the-password"), "{why}");

    let vhost = format!("herald-no-such-vhost-{}", uuid::Uuid::new_v4().simple());
    let url = AMQP_URL.replace("%2f", &vhost);
    let err = Publisher::connect(&url, "herald-tests-login", installed.topology.clone(), 1)
        .await
        .err()
        .expect("an unknown vhost is refused");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains(&vhost), "{err}");
}

/// A queue deleted under a running publisher (an operator's mistake): publishes to it come
/// back unroutable until a re-declaration, which many callers may ask for at once; they all
/// succeed and the queue is back.
///
/// A re-declaration asked for within a second of the last one finishing (connecting declares
/// too) is taken as covered by it, even when the queue went away in between: the test deletes
/// the queue after that second, as an operator would long after the service started.
#[tokio::test]
async fn redeclare_recreates_a_deleted_queue_for_every_concurrent_caller() {
    let installed = Installed::new();
    let topology = installed.topology.clone();
    let publisher = installed.publisher(2).await;
    let record = topology.ledger_message(b"{}".to_vec(), Vec::new());
    publisher
        .publish(std::slice::from_ref(&record))
        .await
        .expect("declared on connect");

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let conn = herald_tests::amqp_connection("herald-tests-redeclare").await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(
        topology.ledger_queue().as_str().into(),
        QueueDeleteOptions::default(),
    )
    .await
    .unwrap();
    let _ = conn.close(200, "done".into()).await;
    assert!(matches!(
        publisher.publish(std::slice::from_ref(&record)).await,
        Err(Error::Unroutable { .. })
    ));

    let outcomes = join_all((0..8).map(|_| publisher.redeclare())).await;
    for outcome in outcomes {
        outcome.expect("every caller's re-declaration succeeds");
    }
    publisher
        .publish(std::slice::from_ref(&record))
        .await
        .expect("routable again");
    assert_eq!(
        ready(&topology.ledger_queue()).await,
        1,
        "only the message published after the re-declaration"
    );
    publisher.close().await;
}
