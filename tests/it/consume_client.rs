//! Herald's own consuming client (`herald_broker::client::ConsumerConnection`) against the real
//! RabbitMQ: deliveries arrive whole with their headers; acks (single and multiple), requeues
//! and rejects do what they say; what is unacked when the connection closes goes back to the
//! queue; after a cancel nothing new arrives but what was received can still be settled; a
//! dead-lettered message says where, why and when it died (either client).

use std::time::Duration;

use herald_broker::client::{ConfirmConnection, ConsumerConnection, Delivery, Endpoint};
use herald_broker::lapin::Channel;
use herald_broker::lapin::options::QueueDeclareOptions;
use herald_broker::{Consumer, Outgoing, QueueType, Settler, Topology};
use herald_core::config::AmqpClient;
use herald_tests::AMQP_URL;
use tokio::sync::mpsc::UnboundedReceiver;

async fn queue() -> herald_tests::TestQueue {
    herald_tests::shared_queue("consumer").await
}

fn endpoint() -> Endpoint {
    Endpoint::parse(AMQP_URL).unwrap()
}

/// Publishes `bodies` to `queue` with a trace header, confirmed.
async fn fill(queue: &str, bodies: &[Vec<u8>]) {
    let publisher = ConfirmConnection::open(&endpoint(), "herald-tests-fill", 1)
        .await
        .unwrap();
    let messages: Vec<_> = bodies
        .iter()
        .map(|b| Outgoing {
            exchange: String::new(),
            routing_key: queue.to_owned(),
            body: b.clone(),
            headers: vec![("traceparent".into(), "00-11-22-01".into())],
        })
        .collect();
    publisher.publish(0, &messages).await.unwrap();
    publisher.close().await;
}

async fn next(rx: &mut UnboundedReceiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a delivery in time")
        .expect("the consumer is running")
}

async fn nothing_for(rx: &mut UnboundedReceiver<Delivery>, wait: Duration) {
    if let Ok(Some(d)) = tokio::time::timeout(wait, rx.recv()).await {
        panic!("unexpected delivery {}", d.tag);
    }
}

/// Messages ready in the queue.
async fn ready(ch: &Channel, queue: &str) -> u32 {
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), options, Default::default())
        .await
        .unwrap()
        .message_count()
}

async fn consumer(queue: &str, prefetch: u16) -> (ConsumerConnection, UnboundedReceiver<Delivery>) {
    ConsumerConnection::open(&endpoint(), "herald-tests-consumer", queue, prefetch)
        .await
        .unwrap()
}

#[tokio::test]
async fn deliveries_arrive_whole_and_a_multiple_ack_settles_them_all() {
    let (_conn, ch, q) = queue().await;
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let bodies: Vec<Vec<u8>> = (0..9)
        .map(|i| format!("{{\"i\":{i}}}").into_bytes())
        .chain([big.clone()])
        .collect();
    fill(&q, &bodies).await;
    let (c, mut rx) = consumer(&q, 100).await;
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(next(&mut rx).await);
    }
    let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
    assert_eq!(tags, (1..=10).collect::<Vec<_>>());
    let received: Vec<Vec<u8>> = got.iter().map(|d| d.body.to_vec()).collect();
    assert_eq!(received, bodies, "in order, the large one across frames");
    assert!(got.iter().all(|d| !d.redelivered));
    assert_eq!(
        got[0].headers,
        [("traceparent".to_owned(), "00-11-22-01".to_owned())]
    );
    c.ack(10, true).unwrap();
    c.close().await;
    assert_eq!(ready(&ch, &q).await, 0, "acked, so nothing came back");
}

#[tokio::test]
async fn requeued_deliveries_come_back_redelivered_rejected_ones_do_not() {
    let (_conn, ch, q) = queue().await;
    fill(
        &q,
        &[b"keep".to_vec(), b"again".to_vec(), b"poison".to_vec()],
    )
    .await;
    let (c, mut rx) = consumer(&q, 10).await;
    let keep = next(&mut rx).await;
    let again = next(&mut rx).await;
    let poison = next(&mut rx).await;
    c.ack(keep.tag, false).unwrap();
    c.reject(poison.tag, false).unwrap();
    c.nack(again.tag, false, true).unwrap();
    let back = next(&mut rx).await;
    assert_eq!(&back.body[..], b"again");
    assert!(back.redelivered);
    c.ack(back.tag, false).unwrap();
    nothing_for(&mut rx, Duration::from_millis(300)).await;
    c.close().await;
    assert_eq!(ready(&ch, &q).await, 0);
}

#[tokio::test]
async fn unacked_deliveries_go_back_when_the_connection_closes() {
    let (_conn, ch, q) = queue().await;
    fill(&q, &[b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]).await;
    let (c, mut rx) = consumer(&q, 2).await;
    let first = next(&mut rx).await;
    let _second = next(&mut rx).await;
    // The prefetch holds the third back until one is settled.
    nothing_for(&mut rx, Duration::from_millis(300)).await;
    c.ack(first.tag, false).unwrap();
    let third = next(&mut rx).await;
    assert_eq!(&third.body[..], b"3");
    c.close().await;
    assert!(!c.is_open());
    assert!(
        c.ack(third.tag, false).is_err(),
        "settling after close fails"
    );
    // Give the broker a moment to requeue what the closed channel held.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ready(&ch, &q).await != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the two unacked came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn after_a_cancel_nothing_new_arrives_and_what_came_can_be_settled() {
    let (_conn, ch, q) = queue().await;
    fill(&q, &[b"1".to_vec()]).await;
    let (c, mut rx) = consumer(&q, 10).await;
    let first = next(&mut rx).await;
    c.cancel().await.unwrap();
    fill(&q, &[b"2".to_vec()]).await;
    nothing_for(&mut rx, Duration::from_millis(300)).await;
    // Settling through the same path the dispatcher's acks use.
    let c = std::sync::Arc::new(c);
    Settler::Own(c.clone()).ack(first.tag, false).await.unwrap();
    c.close().await;
    assert_eq!(
        ready(&ch, &q).await,
        1,
        "only the one published after the cancel"
    );
}

#[tokio::test]
async fn a_missing_queue_is_an_error_that_names_it() {
    let missing = format!("herald-no-such-queue-{}", uuid::Uuid::new_v4().simple());
    let err = ConsumerConnection::open(&endpoint(), "herald-tests-consumer", &missing, 1)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
}

/// A message rejected from a queue with a dead-letter exchange arrives in the dead-letter queue
/// with its latest death (queue, reason, time) read from the `x-death` table RabbitMQ adds, what
/// the ledger's dead-letter records go by; the same through either client.
#[tokio::test]
async fn a_dead_lettered_delivery_says_where_and_when_it_died_through_either_client() {
    for client in [AmqpClient::Herald, AmqpClient::Lapin] {
        let prefix = format!("herald-dl-{}", uuid::Uuid::new_v4().simple());
        let topology = Topology::new(prefix, QueueType::Classic);
        let open = |queue: String| {
            let topology = topology.clone();
            async move {
                Consumer::open(
                    AMQP_URL,
                    "herald-tests-dl",
                    Some(&topology),
                    &queue,
                    1,
                    client,
                )
                .await
                .unwrap()
            }
        };
        let mut work = open(topology.work_queue()).await;
        fill(&topology.work_queue(), &[b"poison".to_vec()]).await;
        let d = within(work.next()).await;
        assert_eq!(d.last_death, None, "{client:?}: not dead-lettered yet");
        work.settler().reject(d.tag).await.unwrap();
        work.close().await;

        let mut dead = open(topology.dead_queue()).await;
        let d = within(dead.next()).await;
        assert_eq!(&d.body[..], b"poison");
        let death = d.last_death.clone().expect("the x-death entry");
        assert_eq!(
            (death.queue.as_str(), death.reason.as_str()),
            (topology.work_queue().as_str(), "rejected"),
            "{client:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            now.abs_diff(death.time) < 120,
            "{client:?}: died at {}, now {now}",
            death.time
        );
        dead.settler().ack(d.tag, false).await.unwrap();
        dead.close().await;

        let conn = herald_broker::connect(AMQP_URL, "herald-tests-dl-cleanup")
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        topology.delete(&ch, &[]).await.unwrap();
    }
}

async fn within(
    next: impl std::future::Future<Output = herald_broker::Result<herald_broker::Delivery>>,
) -> herald_broker::Delivery {
    tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("a delivery in time")
        .expect("the consumer is running")
}
