//! The ledger's partitioned tables (schema v13): partitions made ahead, queries bounded in time
//! read only their days' partitions through an index, retention drops whole partitions.

use std::time::{Duration, Instant};

use chrono::{Duration as Days, NaiveTime, Utc};
use herald_tests::{Herald, Options};

const TABLES: [&str; 3] = ["events", "deliveries", "attempts"];

fn day_name(table: &str, offset: i64) -> String {
    format!(
        "{table}_p{}",
        (Utc::now() + Days::days(offset)).format("%Y%m%d")
    )
}

async fn partitions(herald: &Herald, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = to_regclass($1) ORDER BY 1",
    )
    .bind(table)
    .fetch_all(&herald.pool)
    .await
    .expect("partitions")
}

async fn explain(herald: &Herald, sql: &str) -> String {
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
        .fetch_all(&herald.pool)
        .await
        .expect("explain");
    rows.join("\n")
}

#[tokio::test]
async fn partitions_are_made_ahead_and_bounded_queries_read_only_their_days() {
    let herald = Herald::start(Options::default()).await;
    // The ledger makes them right after its migrations, which may still be running.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !partitions(&herald, "attempts")
        .await
        .contains(&day_name("attempts", 7))
    {
        assert!(Instant::now() < deadline, "no partitions made ahead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for table in TABLES {
        let parts = partitions(&herald, table).await;
        for day in 1..=7 {
            assert!(
                parts.contains(&day_name(table, day)),
                "{table}: day +{day} not made ahead: {parts:?}"
            );
        }
        assert!(parts.contains(&format!("{table}_default")), "{parts:?}");
    }
    // The delivery log from a day on (ListDeliveries with `since`): that day's partitions only,
    // through the (tenant_id, id) index.
    let from = day_name("deliveries", 3);
    let plan = explain(
        &herald,
        "SELECT id FROM deliveries WHERE tenant_id = '00000000-0000-0000-0000-000000000001'
           AND id >= ledger_id_at(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '3 days')
         ORDER BY id DESC LIMIT 51",
    )
    .await;
    assert!(plan.contains(&from), "{plan}");
    for skipped in [day_name("deliveries", 1), "deliveries_legacy".into()] {
        assert!(!plan.contains(&skipped), "{skipped} read:\n{plan}");
    }
    assert!(plan.contains("Index"), "no index used:\n{plan}");
    // A delivery's attempts (GetDelivery bounds them by the delivery's creation).
    let plan = explain(
        &herald,
        "SELECT id FROM attempts WHERE delivery_id = '00000000-0000-0000-0000-000000000001'
           AND id >= ledger_id_at(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '5 days')
         ORDER BY started_at LIMIT 101",
    )
    .await;
    assert!(!plan.contains(&day_name("attempts", 4)), "{plan}");
    assert!(
        plan.contains("attempts_delivery") || plan.contains("Index"),
        "{plan}"
    );
    // The analysts' function over a range reads that range's days only.
    let plan = explain(
        &herald,
        "SELECT * FROM endpoint_hourly_between(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '6 days',
                                               date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '7 days')",
    )
    .await;
    assert!(!plan.contains(&day_name("attempts", 2)), "{plan}");
    assert!(plan.contains(&day_name("attempts", 6)), "{plan}");
    herald.stop().await;
}

#[tokio::test]
async fn retention_drops_partitions_past_it_and_deletes_stragglers() {
    let herald = Herald::start(Options {
        env: vec![
            ("HERALD_PAYLOAD_RETENTION".into(), "720h".into()),
            ("HERALD_ATTEMPT_RETENTION".into(), "720h".into()),
            ("HERALD_RETENTION_INTERVAL".into(), "200ms".into()),
        ],
        ..Default::default()
    })
    .await;
    let old = (Utc::now() - Days::days(100))
        .date_naive()
        .and_time(NaiveTime::MIN)
        .and_utc();
    let old_part = format!("deliveries_p{}", old.format("%Y%m%d"));
    // A fresh ledger's legacy partition covers every day before tomorrow: made room for an old
    // day's partition the way a ledger partitioned for months would have it.
    let setup = format!(
        "ALTER TABLE deliveries DETACH PARTITION deliveries_legacy;
         DROP TABLE deliveries_legacy;
         CREATE TABLE {old_part} PARTITION OF deliveries
           FOR VALUES FROM (ledger_id_at('{a}')) TO (ledger_id_at('{b}'));
         INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status, created_at)
         SELECT ledger_id_at('{a}'::timestamptz + g * interval '1 minute'), gen_random_uuid(),
                gen_random_uuid(), gen_random_uuid(), 'old.day', 'success', '{a}'
         FROM generate_series(1, 50) g;
         INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status, created_at)
         VALUES (ledger_id_at('{c}'), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(),
                 'straggler', 'success', '{c}');",
        a = old.to_rfc3339(),
        b = (old + Days::days(1)).to_rfc3339(),
        c = (old - Days::days(10)).to_rfc3339(),
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(&herald.pool)
        .await
        .expect("old partition");
    // A recent delivery (in a day made ahead) that retention must keep.
    sqlx::query(
        "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status, created_at)
         VALUES (ledger_id_at(now() + interval '1 day'), gen_random_uuid(), gen_random_uuid(),
                 gen_random_uuid(), 'recent', 'success', now())",
    )
    .execute(&herald.pool)
    .await
    .expect("recent row");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let parts = partitions(&herald, "deliveries").await;
        let types: Vec<String> = sqlx::query_scalar("SELECT event_type FROM deliveries")
            .fetch_all(&herald.pool)
            .await
            .expect("rows");
        if !parts.contains(&old_part) && types == ["recent"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention left {parts:?} and rows {types:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    herald.stop().await;
}
