//! What analysts get: read views, and a queue of their own bound to the record stream.

use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{Herald, Options};

use crate::page::{endpoint, status_is};

#[tokio::test]
async fn analysts_read_views_and_bind_their_own_queue_to_the_record_stream() {
    use futures::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use lapin::types::FieldTable;

    let herald = Herald::start(Options {
        retry_schedule: "100ms".into(),
        ..Default::default()
    })
    .await;
    // An analytics consumer's own queue on the ledger's fanout exchange.
    let conn = herald_tests::amqp_connection("analytics-test").await;
    let ch = conn.create_channel().await.unwrap();
    let queue = format!("{}.analytics", herald.name);
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        format!("{}.ledger", herald.name).as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let rx = Receiver::start(|path, n| {
        if path == "/flaky" && n == 1 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let t = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&t, endpoint(rx.url("/flaky"), &["*"]))
        .await;
    let p = herald.publish(&t, "stats.check", b"{\"k\":1}").await;
    herald
        .wait_delivery(
            &t,
            &herald.wait_deliveries(&t, &p.event_id, 1).await[0].id,
            Duration::from_secs(10),
            status_is(pb::DeliveryStatus::Success),
        )
        .await;

    // The stream: an event record and two attempt records (retrying, then success), v1.
    let mut kinds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while kinds.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, consumer.next())
            .await
            .expect("records arrive on the analyst's queue")
            .unwrap()
            .unwrap();
        let batch: serde_json::Value = serde_json::from_slice(&msg.data).unwrap();
        assert_eq!(batch["v"], 1);
        for r in batch["records"].as_array().unwrap() {
            let kind = r["kind"].as_str().unwrap().to_owned();
            if kind == "event" {
                assert_eq!(r["event_id"], p.event_id.as_str());
                assert_eq!(r["payload"], "{\"k\":1}");
            } else {
                assert_eq!(r["endpoint_id"], ep.id.as_str());
            }
            kinds.push((kind, r["outcome"].as_str().unwrap_or("").to_owned()));
        }
        msg.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("attempt".to_owned(), "retrying".to_owned()),
            ("attempt".to_owned(), "success".to_owned()),
            ("event".to_owned(), String::new()),
        ]
    );
    let _ = conn.close(200, "done".into()).await;

    // The views answer the common questions.
    let (attempts, deliveries, successes, retries): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT attempts, deliveries, successes, retries FROM endpoint_hourly WHERE endpoint_id = $1::uuid",
    )
    .bind(&ep.id)
    .fetch_one(&herald.pool)
    .await
    .unwrap();
    assert_eq!((attempts, deliveries, successes, retries), (2, 1, 1, 1));
    let (events, failed): (i64, i64) = sqlx::query_as(
        "SELECT events, failed FROM event_type_daily WHERE event_type = 'stats.check'",
    )
    .fetch_one(&herald.pool)
    .await
    .unwrap();
    assert_eq!((events, failed), (1, 0));
    herald.stop().await;
}
