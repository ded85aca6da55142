//! Coalesced acks (`herald_broker::Acks`) against the real RabbitMQ: a multiple ack never
//! settles a delivery still being worked on, completed deliveries behind a straggler are still
//! acked, and a requeue goes back to the queue even when acks around it are coalesced.

use std::time::Duration;

use herald_broker::{AckPolicy, Acks, Consumer};
use herald_tests::AMQP_URL;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Connection};

/// A queue holding messages "0".."n-1" (gone a minute after its last use), with the
/// connection that filled it.
async fn queue_with(n: usize) -> (Connection, String) {
    let (conn, ch, name) = herald_tests::shared_queue("acks").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            name.as_str().into(),
            BasicPublishOptions::default(),
            i.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    (conn, name)
}

/// Consumes `n` deliveries with Herald's consumer; returns it and (tag, body) in order.
async fn take(queue: &str, n: usize) -> (Consumer, Vec<(u64, String)>) {
    let mut consumer = Consumer::open(AMQP_URL, "herald-tests-acks", None, queue, 100)
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("delivery in time")
            .unwrap();
        got.push((d.tag, String::from_utf8(d.body.to_vec()).unwrap()));
    }
    (consumer, got)
}

/// `n` messages consumed by a fresh consumer, each announced to a new [`Acks`].
struct Consumed {
    conn: Connection,
    consumer: Consumer,
    queue: String,
    got: Vec<(u64, String)>,
    acks: Acks,
}

async fn consumed(n: usize, policy: AckPolicy) -> Consumed {
    let (conn, queue) = queue_with(n).await;
    let (consumer, got) = take(&queue, n).await;
    let acks = Acks::start(consumer.settler(), policy);
    for (tag, _) in &got {
        acks.received(*tag);
    }
    Consumed {
        conn,
        consumer,
        queue,
        got,
        acks,
    }
}

impl Consumed {
    /// Closes the consumer (the broker hands back what it did not see settled); returns what
    /// went back to the queue.
    async fn finish(self) -> Vec<String> {
        self.consumer.close().await;
        let left = remaining(&self.conn, &self.queue).await;
        let _ = self.conn.close(200, "done".into()).await;
        left
    }
}

/// What is left in the queue once every consumer channel is closed.
async fn remaining(conn: &Connection, queue: &str) -> Vec<String> {
    let ch = conn.create_channel().await.unwrap();
    let mut left = Vec::new();
    while let Some(m) = ch
        .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        left.push(String::from_utf8(m.delivery.data).unwrap());
    }
    left.sort();
    left
}

#[tokio::test]
async fn a_straggler_stays_unacked_while_the_deliveries_after_it_are_acked() {
    let policy = AckPolicy {
        max_wait: Duration::from_millis(30),
        max_waiting: 64,
    };
    let c = consumed(6, policy).await;
    // The first delivery is still being worked on; the others finish.
    for (tag, _) in &c.got[1..] {
        c.acks.ack(*tag);
    }
    // After max_wait they are acked one by one, while the channel stays open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = c.got[0].1.clone();
    assert_eq!(c.finish().await, vec![first]);
}

#[tokio::test]
async fn closing_acks_what_finished_and_hands_back_what_did_not() {
    let c = consumed(8, AckPolicy::default()).await;
    // Finished out of order, except one handed back and one never settled (shutdown).
    for i in [7, 0, 2, 1, 5, 6] {
        c.acks.ack(c.got[i].0);
    }
    c.acks.requeue(c.got[3].0);
    c.acks.close().await;
    let mut expected = vec![c.got[3].1.clone(), c.got[4].1.clone()];
    expected.sort();
    assert_eq!(c.finish().await, expected);
}

#[tokio::test]
async fn a_rejected_delivery_is_not_requeued_and_a_run_around_it_is_acked() {
    let c = consumed(5, AckPolicy::default()).await;
    c.acks.ack(c.got[0].0);
    c.acks.reject(c.got[1].0);
    for (tag, _) in &c.got[2..] {
        c.acks.ack(*tag);
    }
    // No close: the run up to the last tag goes out on its own, without waiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.finish().await.is_empty());
}
