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

/// A UUIDv7 of `days` ago (plus `n` ms), as ingest and the dispatcher make them.
fn v7_days_ago(days: i64, n: i64) -> uuid::Uuid {
    let ms = (Utc::now() - Days::days(days)).timestamp_millis() + n;
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(ms as u64, &random).into_uuid()
}

/// Every row of a table, as text in id order (without the column the migration adds).
async fn fingerprint(pool: &sqlx::PgPool, table: &str) -> (i64, String) {
    let sql = format!(
        "SELECT count(*), coalesce(md5(string_agg((to_jsonb(x) - 'revision')::text, '|' ORDER BY id)), '')
         FROM {table} x"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .expect("fingerprint")
}

#[tokio::test]
async fn the_migration_takes_a_ledger_holding_data_to_partitions_without_losing_a_row() {
    let name = format!("tmig{:08x}", rand::random::<u32>());
    let pool = herald_tests::schema_pool(&name, 2).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
        .execute(&pool)
        .await
        .expect("schema");
    // The ledger as schema v12 left it.
    let v12 = sqlx::migrate::Migrator {
        migrations: herald_store::MIGRATOR
            .migrations
            .iter()
            .filter(|m| m.version <= 12)
            .cloned()
            .collect(),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    v12.run(&pool).await.expect("migrations to v12");
    let (tenant, endpoint) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    // 300 events over the last 60 days, a delivery each, two attempts per delivery.
    let events: Vec<uuid::Uuid> = (0..300).map(|n| v7_days_ago(60 - n / 5, n)).collect();
    let deliveries: Vec<uuid::Uuid> = events
        .iter()
        .map(|e| herald_core::wire::delivery_id(*e, endpoint))
        .collect();
    let attempts: Vec<uuid::Uuid> = (0..600)
        .map(|n| v7_days_ago(60 - n / 10, 1_000 + n))
        .collect();
    sqlx::query(
        "INSERT INTO events (id, tenant_id, event_type, occurred_at, accepted_at, payload)
         SELECT e, $2, 'order.paid', now(), now(), '{\"n\":' || n || '}'
         FROM unnest($1::uuid[]) WITH ORDINALITY AS u(e, n)",
    )
    .bind(&events)
    .bind(tenant)
    .execute(&pool)
    .await
    .expect("events");
    sqlx::query(
        "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status,
                                 attempt_count, response_status, created_at)
         SELECT d, $3, e, $4, 'order.paid', CASE WHEN n % 3 = 0 THEN 'failed' ELSE 'success' END,
                2, 200, now()
         FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS u(d, e, n)",
    )
    .bind(&deliveries)
    .bind(&events)
    .bind(tenant)
    .bind(endpoint)
    .execute(&pool)
    .await
    .expect("deliveries");
    sqlx::query(
        "INSERT INTO attempts (id, delivery_id, tenant_id, endpoint_id, attempt, trigger, status,
                               started_at, latency_ms, response_status, response_body)
         SELECT a, ($2::uuid[])[(n + 1) / 2], $3, $4, 2 - n % 2, 'event', 'success', now(), 7,
                200, 'ok'
         FROM unnest($1::uuid[]) WITH ORDINALITY AS u(a, n)",
    )
    .bind(&attempts)
    .bind(&deliveries)
    .bind(tenant)
    .bind(endpoint)
    .execute(&pool)
    .await
    .expect("attempts");
    let mut before = Vec::new();
    for table in TABLES {
        before.push(fingerprint(&pool, table).await);
    }

    herald_store::MIGRATOR
        .run(&pool)
        .await
        .expect("migration to v13");

    for (table, was) in TABLES.iter().zip(&before) {
        assert_eq!(&fingerprint(&pool, table).await, was, "{table} changed");
        // Where they were: the legacy partition, nothing copied elsewhere.
        let sql = format!("SELECT count(*) FROM {table}_legacy");
        let legacy: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&pool)
            .await
            .expect("legacy partition");
        assert_eq!(legacy, was.0, "{table}");
        let kind: String =
            sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)")
                .bind(*table)
                .fetch_one(&pool)
                .await
                .expect("relkind");
        assert_eq!(kind, "p", "{table} is partitioned");
    }
    assert_eq!(
        before.iter().map(|b| b.0).collect::<Vec<_>>(),
        [300, 300, 600]
    );
    // The old rows answer the API's bounded queries, and the ledger's upsert still tells a row it
    // made from one it updated.
    let recent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries
         WHERE tenant_id = $1 AND id >= ledger_id_at(now() - interval '9 days 12 hours')",
    )
    .bind(tenant)
    .fetch_one(&pool)
    .await
    .expect("bounded read");
    assert_eq!(recent, 45, "the deliveries of the last 9 days (5 a day)");
    let of_first: i64 =
        sqlx::query_scalar("SELECT count(*) FROM attempts WHERE delivery_id = $1 AND id >= $2")
            .bind(deliveries[0])
            .bind(v7_days_ago(61, 0))
            .fetch_one(&pool)
            .await
            .expect("attempts of a delivery");
    assert_eq!(of_first, 2);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{name}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .expect("drop schema");
    pool.close().await;
}
