//! Batching on the hot path, against the real services: ledger records handed in within a
//! linger share one confirmed message (and a full message does not wait for it), and a
//! delivery whose event and attempt records are written in the same transaction is inserted
//! once, in its attempted state, with its statistics and test flag as if written in two steps;
//! a delivery written pending and then delivered is updated in place (HOT), and the status
//! filters find every state without an index on `status`.

use std::time::{Duration, Instant};

use chrono::Utc;
use herald_broker::{Batching, Publisher, QueueType, RecordBatcher, Topology};
use herald_core::wire::{
    AbandonedRecord, AttemptRecord, DeliveryKey, DeliveryStatus, EventRecord, LedgerBatch, Record,
    Trigger,
};
use herald_ledger::write::{Batch, apply, apply_with};
use herald_proto::v1 as pb;
use herald_tests::{AMQP_URL, Herald, Options, cleanup, schema_pool};
use lapin::options::BasicGetOptions;
use uuid::Uuid;

fn abandoned(reason: &str) -> Record {
    Record::Abandoned(AbandonedRecord {
        delivery: DeliveryKey {
            delivery_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            endpoint_id: Uuid::now_v7(),
            event_type: "batching.test".into(),
            created_at: Utc::now(),
        },
        at: Utc::now(),
        reason: reason.into(),
        attempts_before: 0,
    })
}

/// Every message waiting in the ledger queue, as its records' reasons.
async fn ledger_messages(publisher: &Publisher) -> Vec<Vec<String>> {
    let conn = herald_tests::amqp_connection("herald-tests-batching").await;
    let ch = conn.create_channel().await.unwrap();
    let queue = publisher.topology().ledger_queue();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let batch = LedgerBatch::decode(&m.delivery.data).unwrap();
        out.push(
            batch
                .records
                .into_iter()
                .map(|r| match r {
                    Record::Abandoned(a) => a.reason,
                    other => panic!("unexpected record {other:?}"),
                })
                .collect(),
        );
    }
    let _ = conn.close(200, "done".into()).await;
    out
}

#[tokio::test]
async fn records_handed_in_within_the_linger_share_one_message() {
    let name = format!("herald-batching-{}", Uuid::new_v4().simple());
    let topology = Topology::new(name.clone(), QueueType::Quorum);
    let publisher = Publisher::connect(AMQP_URL, "herald-tests-batching", topology, 1)
        .await
        .unwrap();
    let records = RecordBatcher::start(
        publisher.clone(),
        Batching {
            max_records: 100,
            in_flight: 1,
            linger: Duration::from_millis(400),
        },
    );
    // Three callers, 50 ms apart: all inside the first one's linger.
    let started = Instant::now();
    let submit = |i: u64| {
        let records = records.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50 * i)).await;
            records
                .submit(vec![abandoned(&format!("r{i}"))], Vec::new())
                .await
        }
    };
    let (a, b, c) = tokio::join!(submit(0), submit(1), submit(2));
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(390),
        "answered before the linger ran out: {waited:?}"
    );
    assert_eq!(
        ledger_messages(&publisher).await,
        vec![vec!["r0".to_owned(), "r1".to_owned(), "r2".to_owned()]]
    );

    // A message that is full goes at once, whatever the linger.
    let full = RecordBatcher::start(
        publisher.clone(),
        Batching {
            max_records: 2,
            in_flight: 1,
            linger: Duration::from_secs(30),
        },
    );
    let started = Instant::now();
    full.submit(vec![abandoned("f0"), abandoned("f1")], Vec::new())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a full message waited for the linger: {:?}",
        started.elapsed()
    );
    assert_eq!(
        ledger_messages(&publisher).await,
        vec![vec!["f0".to_owned(), "f1".to_owned()]]
    );
    publisher.close().await;
    cleanup(&name, &[]).await;
}

fn attempt(key: &DeliveryKey, trigger: Trigger, outcome: DeliveryStatus, n: u32) -> AttemptRecord {
    AttemptRecord {
        attempt_id: Uuid::now_v7(),
        delivery: key.clone(),
        attempt: n,
        trigger,
        started_at: Utc::now(),
        latency_ms: 12,
        response_status: Some(if outcome == DeliveryStatus::Success {
            200
        } else {
            500
        }),
        response_body: "ok".into(),
        error: None,
        outcome,
        next_retry_at: None,
    }
}

#[tokio::test]
async fn a_delivery_attempted_in_its_events_batch_is_written_once() {
    let h = Herald::start(Options {
        dispatchers: 0,
        ..Default::default()
    })
    .await;
    let (tenant, endpoint) = (Uuid::now_v7(), Uuid::now_v7());
    let others: Vec<Uuid> = (0..2).map(|_| Uuid::now_v7()).collect();
    let targets = [endpoint, others[0], others[1]];
    let (event, tasks) = EventRecord::fan_out(
        Uuid::now_v7(),
        tenant,
        "batching.merge",
        br#"{"n":1}"#,
        Utc::now(),
        None,
        &targets,
    );
    let key = DeliveryKey::of(&tasks[0]);
    let mut batch = Batch::default();
    batch.push(Record::Event(event.clone()));
    batch.push(Record::Attempt(attempt(
        &key,
        Trigger::Scheduled,
        DeliveryStatus::Success,
        1,
    )));
    apply(&h.pool, &batch).await.unwrap();

    let rows: Vec<(Uuid, String, i32, bool)> = sqlx::query_as(
        "SELECT endpoint_id, status, attempt_count, test FROM deliveries WHERE event_id = $1 ORDER BY endpoint_id",
    )
    .bind(event.event_id)
    .fetch_all(&h.pool)
    .await
    .unwrap();
    let mut expected: Vec<(Uuid, String, i32, bool)> = vec![
        (endpoint, "success".into(), 1, false),
        (others[0], "pending".into(), 0, false),
        (others[1], "pending".into(), 0, false),
    ];
    expected.sort();
    assert_eq!(rows, expected);
    // Inserted once, never updated: the table is new, so its three rows are the only tuple
    // versions on its first page (an insert then update would leave a fourth).
    let (versions, last): (i64, f64) =
        sqlx::query_as("SELECT count(*), max((ctid::text::point)[1]) FROM deliveries")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!((versions, last), (3, 3.0));
    let stats = |endpoint: Uuid| {
        let pool = h.pool.clone();
        async move {
            sqlx::query_as::<_, (i64, Option<String>)>(
                "SELECT total_deliveries, last_status FROM endpoint_stats WHERE endpoint_id = $1",
            )
            .bind(endpoint)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(stats(endpoint).await, (1, Some("success".into())));
    // A delivery not yet attempted shows on its endpoint's card as pending.
    assert_eq!(stats(others[0]).await, (1, Some("pending".into())));

    // The same batch again (a redelivered message) changes nothing and counts nothing twice;
    // a later failed manual attempt leaves the success in place.
    apply(&h.pool, &batch).await.unwrap();
    apply_attempt(&h.pool, &key, Trigger::Manual, DeliveryStatus::Failed, 2).await;
    let (status, attempts): (String, i64) = sqlx::query_as(
        "SELECT d.status, (SELECT count(*) FROM attempts a WHERE a.delivery_id = d.id) FROM deliveries d WHERE d.id = $1",
    )
    .bind(key.delivery_id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), attempts), ("success", 2));
    assert_eq!(stats(endpoint).await.0, 1);
    assert_eq!(stats(others[1]).await.0, 1);

    // Held one write: the next batch's first attempt merges into the held row; the rows still
    // without an attempt are written pending then, and only then.
    let (event, tasks) = EventRecord::fan_out(
        Uuid::now_v7(),
        tenant,
        "batching.held",
        br#"{"n":2}"#,
        Utc::now(),
        None,
        &[endpoint, others[0]],
    );
    let mut first = Batch::default();
    first.push(Record::Event(event.clone()));
    let held = apply_with(&h.pool, &first, &[], true).await.unwrap();
    assert_eq!(held.len(), 2);
    let count = |event_id: Uuid| {
        let pool = h.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM deliveries WHERE event_id = $1")
                .bind(event_id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(event.event_id).await, 0, "held rows are not written");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE id = $1")
        .bind(event.event_id)
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(events, 1, "the event itself is written at once");
    let last_version = || {
        let pool = h.pool.clone();
        async move {
            sqlx::query_scalar::<_, f64>("SELECT max((ctid::text::point)[1]) FROM deliveries")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let before = last_version().await;
    let mut second = Batch::default();
    second.push(Record::Attempt(attempt(
        &DeliveryKey::of(&tasks[0]),
        Trigger::Scheduled,
        DeliveryStatus::Retrying,
        1,
    )));
    let left = apply_with(&h.pool, &second, &held, true).await.unwrap();
    assert!(left.is_empty(), "held rows are never held twice");
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT endpoint_id, status FROM deliveries WHERE event_id = $1 ORDER BY endpoint_id",
    )
    .bind(event.event_id)
    .fetch_all(&h.pool)
    .await
    .unwrap();
    let mut expected = vec![
        (endpoint, "retrying".to_owned()),
        (others[0], "pending".to_owned()),
    ];
    expected.sort();
    assert_eq!(rows, expected);
    // Two rows, two new tuple versions: an insert then update would have left a third.
    assert_eq!(
        last_version().await - before,
        2.0,
        "every row inserted once, none updated"
    );
    assert_eq!(stats(endpoint).await.0, 2);
    assert_eq!(stats(others[0]).await.0, 2);
    h.stop().await;
}

#[tokio::test]
async fn a_held_row_postgres_refuses_is_dead_lettered_with_its_message() {
    use lapin::BasicProperties;
    use lapin::options::BasicPublishOptions;
    use rand::Rng;

    let h = Herald::start(Options {
        dispatchers: 0,
        ..Default::default()
    })
    .await;
    // An event type too long for a btree entry once in `deliveries` (random, so it does not
    // compress): its event row goes in, its delivery row is refused (SQLSTATE 54000).
    let long: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(8_000)
        .map(char::from)
        .collect();
    let record = |event_type: &str| {
        let (event, _) = EventRecord::fan_out(
            Uuid::now_v7(),
            Uuid::now_v7(),
            event_type,
            br#"{"n":1}"#,
            Utc::now(),
            None,
            &[Uuid::now_v7()],
        );
        event
    };
    let (poison, fine) = (record(&long), record("batching.fine"));
    let conn = herald_tests::amqp_connection("herald-tests-batching").await;
    let ch = conn.create_channel().await.unwrap();
    let exchange = format!("{}.ledger", h.name);
    for event in [&poison, &fine] {
        let body = LedgerBatch::new(vec![Record::Event(event.clone())]).encode();
        ch.basic_publish(
            exchange.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (dead, fine_rows): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM deliveries WHERE event_id = $1 AND status = 'pending')",
        )
        .bind(fine.event_id)
        .fetch_one(&h.pool)
        .await
        .unwrap();
        if dead == 1 && fine_rows == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ledger is stuck on the refused row: {dead} dead letters, {fine_rows} rows of the event behind it"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let poisoned: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE event_id = $1")
        .bind(poison.event_id)
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(poisoned, 0);
    let _ = conn.close(200, "done".into()).await;
    h.stop().await;
}

#[tokio::test]
async fn a_pending_delivery_that_succeeds_is_updated_in_place() {
    let h = Herald::start(Options {
        dispatchers: 0,
        ..Default::default()
    })
    .await;
    let t = h.tenant().await;
    let tenant: Uuid = t.id.parse().unwrap();
    // One connection, so the statistics flush below is the writer's own.
    let writer = schema_pool(&h.name, 1).await;
    let targets: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let (event, tasks) = EventRecord::fan_out(
        Uuid::now_v7(),
        tenant,
        "batching.hot",
        br#"{"n":1}"#,
        Utc::now(),
        None,
        &targets,
    );
    let mut first = Batch::default();
    first.push(Record::Event(event.clone()));
    apply(&writer, &first).await.unwrap();
    // Three succeed, one fails, one retries; each a separate update of a pending row.
    let outcomes = [
        DeliveryStatus::Success,
        DeliveryStatus::Success,
        DeliveryStatus::Success,
        DeliveryStatus::Failed,
        DeliveryStatus::Retrying,
    ];
    let mut second = Batch::default();
    for (task, outcome) in tasks.iter().zip(outcomes) {
        second.push(Record::Attempt(attempt(
            &DeliveryKey::of(task),
            Trigger::Scheduled,
            outcome,
            1,
        )));
    }
    apply(&writer, &second).await.unwrap();
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&writer)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (updated, hot) = loop {
        let (updated, hot): (i64, i64) = sqlx::query_as(
            // Summed over the partitions of `deliveries` (the parent has no rows of its own).
            "SELECT coalesce(sum(n_tup_upd), 0)::bigint, coalesce(sum(n_tup_hot_upd), 0)::bigint
             FROM pg_stat_user_tables s JOIN pg_inherits i ON i.inhrelid = s.relid
             WHERE s.schemaname = $1 AND i.inhparent = format('%I.deliveries', $1::text)::regclass",
        )
        .bind(&h.name)
        .fetch_one(&h.pool)
        .await
        .unwrap();
        if updated >= 5 || Instant::now() > deadline {
            break (updated, hot);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // pending -> success changes no indexed value: heap-only. Becoming failed or retrying
    // changes `problem`, which its partial indexes hold.
    assert_eq!((updated, hot), (5, 3), "updates, of which HOT");

    // Every status filter finds its rows, through whichever column serves it.
    for (status, want) in [
        (pb::DeliveryStatus::Success, 3),
        (pb::DeliveryStatus::Failed, 1),
        (pb::DeliveryStatus::Retrying, 1),
        (pb::DeliveryStatus::Pending, 0),
    ] {
        let listed = h
            .list_deliveries(
                &t,
                pb::ListDeliveriesRequest {
                    status: status as i32,
                    event_type: Some("batching.hot".into()),
                    ..Default::default()
                },
            )
            .await;
        assert_eq!(listed.len(), want, "{status:?}");
        assert!(
            listed.iter().all(|d| d.status == status as i32),
            "{status:?}"
        );
    }
    let (problems, nulls): (Vec<String>, i64) = sqlx::query_as(
        "SELECT array_agg(problem ORDER BY problem) FILTER (WHERE problem IS NOT NULL), count(*) FILTER (WHERE problem IS NULL) FROM deliveries",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(
        (problems, nulls),
        (vec!["failed".to_owned(), "retrying".to_owned()], 3)
    );
    writer.close().await;
    h.stop().await;
}

/// An event to one new endpoint, and the key of its delivery.
fn one_delivery(event_type: &str) -> (EventRecord, DeliveryKey) {
    let (event, tasks) = EventRecord::fan_out(
        Uuid::now_v7(),
        Uuid::now_v7(),
        event_type,
        br#"{"n":1}"#,
        Utc::now(),
        None,
        &[Uuid::now_v7()],
    );
    (event, DeliveryKey::of(&tasks[0]))
}

/// Applies one attempt record in a batch of its own.
async fn apply_attempt(
    pool: &sqlx::PgPool,
    key: &DeliveryKey,
    trigger: Trigger,
    outcome: DeliveryStatus,
    n: u32,
) {
    let mut batch = Batch::default();
    batch.push(Record::Attempt(attempt(key, trigger, outcome, n)));
    apply(pool, &batch).await.unwrap();
}

/// Status, attempt count, whether a next retry is set, and the last error of a delivery row.
async fn delivery_state(pool: &sqlx::PgPool, id: Uuid) -> (String, i32, bool, String) {
    sqlx::query_as(
        "SELECT status, attempt_count, next_retry_at IS NOT NULL, coalesce(last_error, '')
         FROM deliveries WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// An abandonment (endpoint deleted or disabled before attempt 3) is final whatever order the
/// records arrive in: the earlier attempts' records, applied after it, do not bring the
/// delivery back to `retrying`; only a success would outrank it.
#[tokio::test]
async fn an_abandoned_delivery_stays_failed_when_earlier_records_arrive_late() {
    let h = Herald::start(Options {
        dispatchers: 0,
        ..Default::default()
    })
    .await;
    let (event, key) = one_delivery("batching.abandoned");
    let mut first = Batch::default();
    first.push(Record::Event(event));
    first.push(Record::Attempt(attempt(
        &key,
        Trigger::Scheduled,
        DeliveryStatus::Retrying,
        1,
    )));
    apply(&h.pool, &first).await.unwrap();
    let mut gone = Batch::default();
    gone.push(Record::Abandoned(AbandonedRecord {
        delivery: key.clone(),
        at: Utc::now(),
        reason: "endpoint deleted".into(),
        attempts_before: 2,
    }));
    apply(&h.pool, &gone).await.unwrap();
    let row = || delivery_state(&h.pool, key.delivery_id);
    assert_eq!(
        row().await,
        ("failed".into(), 2, false, "endpoint deleted".into())
    );
    // Attempt 2's record (it was retrying) arrives only now.
    apply_attempt(
        &h.pool,
        &key,
        Trigger::Scheduled,
        DeliveryStatus::Retrying,
        2,
    )
    .await;
    assert_eq!(
        row().await.0,
        "failed",
        "an earlier attempt cannot undo the end"
    );
    // A success does outrank it: the delivery did arrive.
    apply_attempt(
        &h.pool,
        &key,
        Trigger::Scheduled,
        DeliveryStatus::Success,
        2,
    )
    .await;
    assert_eq!(row().await.0, "success");
    h.stop().await;
}

/// A manual attempt that fails ends nothing: a delivery still retrying keeps its status and
/// its next retry, and that retry (numbered like the manual attempt) is still recorded.
#[tokio::test]
async fn a_failed_manual_attempt_leaves_the_schedule_alone() {
    let h = Herald::start(Options {
        dispatchers: 0,
        ..Default::default()
    })
    .await;
    let (event, key) = one_delivery("batching.manual");
    let next = Utc::now() + chrono::Duration::minutes(5);
    let mut first = Batch::default();
    first.push(Record::Event(event));
    first.push(Record::Attempt(AttemptRecord {
        next_retry_at: Some(next),
        ..attempt(&key, Trigger::Scheduled, DeliveryStatus::Retrying, 1)
    }));
    apply(&h.pool, &first).await.unwrap();
    let row = || async {
        let (status, count, next, _) = delivery_state(&h.pool, key.delivery_id).await;
        (status, count, next)
    };
    // Two manual attempts fail (numbered after the count, as redeliver does): the count
    // stays with the schedule's attempts.
    apply_attempt(&h.pool, &key, Trigger::Manual, DeliveryStatus::Failed, 2).await;
    apply_attempt(&h.pool, &key, Trigger::Manual, DeliveryStatus::Failed, 2).await;
    assert_eq!(row().await, ("retrying".into(), 1, true));
    apply_attempt(&h.pool, &key, Trigger::Scheduled, DeliveryStatus::Failed, 2).await;
    assert_eq!(row().await, ("failed".into(), 2, false));
    h.stop().await;
}
