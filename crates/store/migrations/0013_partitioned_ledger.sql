-- Herald schema v13: the ledger's big tables partitioned by time.
--
-- `events`, `deliveries` and `attempts` grow by a row per event, delivery and attempt; one heap
-- and one set of indexes per table made retention a DELETE of every old row (and its index
-- entries and WAL) and kept every old page in the indexes the API walks. Now each table is
-- PARTITION BY RANGE (id): ids are UUIDv7 made when the row was created, so an id range is a
-- time range, and
-- - lookups by id, and the API's queries, which bound ids by time (`ledger_id_at`), touch only
--   the partitions of their time range (the planner prunes the others);
-- - retention detaches and drops whole partitions: no row-by-row DELETE, no bloat;
-- - the primary keys stay `id`: a record applied twice is still a no-op (ON CONFLICT (id)).
-- The ledger creates a partition per UTC day ahead of time (HERALD_LEDGER_PARTITIONS_AHEAD); a
-- default partition takes any row whose day has none, so a write never fails for want of one.
--
-- An existing ledger keeps its rows where they are: each old table becomes the first partition
-- of the new one (`<table>_legacy`, every id before tomorrow 00:00 UTC), so this migration
-- copies nothing. Attaching it checks each row's id once (a scan of the table, no rewrite) and
-- reuses its indexes. Retention drops it whole once its newest rows are past retention, and
-- removes its older rows in chunks until then.

-- The smallest UUIDv7 of the millisecond `t` (what herald_ledger::retention::first_id_at
-- computes in Rust): a time bound as an id bound.
CREATE FUNCTION ledger_id_at(t timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (lpad(to_hex(greatest(floor(extract(epoch FROM t) * 1000), 0)::bigint), 12, '0')
            || '70008000000000000000')::uuid
$$;

-- The views name the tables they read: they are made again on the partitioned tables below.
DROP VIEW endpoint_hourly;
DROP VIEW event_type_daily;

DO $$
DECLARE
    t text;
    ix record;
    bound uuid := ledger_id_at(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day');
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'deliveries', 'attempts'] LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', t, t || '_legacy');
        -- Free the index names for the new table's indexes.
        FOR ix IN SELECT indexname FROM pg_indexes
                  WHERE tablename = t || '_legacy' AND schemaname = current_schema() LOOP
            EXECUTE format('ALTER INDEX %I RENAME TO %I', ix.indexname, ix.indexname || '_legacy');
        END LOOP;
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS) PARTITION BY RANGE (id)',
                       t, t || '_legacy');
        EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (id)', t);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)',
                       t, t || '_legacy', bound);
        -- Rows no day's partition takes (a partition not made in time) land here rather than
        -- fail their batch; it stays empty when partitions are made ahead.
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT%s', t || '_default', t,
                       CASE WHEN t = 'deliveries' THEN ' WITH (fillfactor = 70)' ELSE '' END);
    END LOOP;
END $$;

-- Upserts of deliveries told a created row from an updated one by `xmax = 0`, a system column
-- a partitioned table cannot return. An upsert's update now counts itself here, so a row it
-- returns with revision 0 is one it created (a column without a volatile default: added
-- without rewriting the table).
ALTER TABLE deliveries ADD COLUMN revision integer NOT NULL DEFAULT 0;

-- The indexes of schema v12, on the partitioned tables (each partition gets its own; the
-- legacy partitions' existing ones are attached, not built again).
CREATE INDEX events_tenant ON events (tenant_id, id DESC);
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, id DESC);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, id DESC);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_tenant_type ON deliveries (tenant_id, event_type, id DESC);
CREATE INDEX deliveries_tenant_problem ON deliveries (tenant_id, problem, id DESC)
    WHERE problem IS NOT NULL;
CREATE INDEX deliveries_endpoint_problem ON deliveries (endpoint_id, problem, id)
    WHERE problem IS NOT NULL;
CREATE INDEX attempts_delivery ON attempts (delivery_id, started_at);

-- The analyst views of schema v3, unchanged: over the whole ledger.
CREATE VIEW endpoint_hourly AS
SELECT a.tenant_id,
       a.endpoint_id,
       date_trunc('hour', a.started_at)                                   AS hour,
       count(*)                                                           AS attempts,
       count(DISTINCT a.delivery_id)                                      AS deliveries,
       count(*) FILTER (WHERE a.status = 'success')                       AS successes,
       (count(*) FILTER (WHERE a.status = 'success'))::float8 / count(*)  AS success_rate,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_ms)          AS p50_latency_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY a.latency_ms)         AS p95_latency_ms,
       count(*) FILTER (WHERE a.attempt > 1)                              AS retries
FROM attempts a
GROUP BY a.tenant_id, a.endpoint_id, date_trunc('hour', a.started_at);

CREATE VIEW event_type_daily AS
SELECT d.tenant_id,
       d.event_type,
       date_trunc('day', d.created_at)                                    AS day,
       count(DISTINCT d.event_id)                                         AS events,
       count(*)                                                           AS deliveries,
       count(*) FILTER (WHERE d.status = 'failed')                        AS failed,
       (count(*) FILTER (WHERE d.status = 'failed'))::float8 / count(*)   AS failure_rate
FROM deliveries d
WHERE NOT d.test
GROUP BY d.tenant_id, d.event_type, date_trunc('day', d.created_at);

-- The same figures over [since, until): these read only the partitions of that range (a
-- filter on the views' hour or day column cannot prune, as it is not the partition key).
CREATE FUNCTION endpoint_hourly_between(since timestamptz, until timestamptz)
RETURNS SETOF endpoint_hourly LANGUAGE sql STABLE
AS $$
    SELECT a.tenant_id, a.endpoint_id, date_trunc('hour', a.started_at), count(*),
           count(DISTINCT a.delivery_id), count(*) FILTER (WHERE a.status = 'success'),
           (count(*) FILTER (WHERE a.status = 'success'))::float8 / count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_ms),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY a.latency_ms),
           count(*) FILTER (WHERE a.attempt > 1)
    FROM attempts a
    -- An id is made a little after the time it stands for (an attempt's when its record is
    -- written): the id bounds are an hour wider than the range, the time filter exact.
    WHERE a.id >= ledger_id_at(since - interval '1 hour')
      AND a.id < ledger_id_at(until + interval '1 hour')
      AND a.started_at >= since AND a.started_at < until
    GROUP BY a.tenant_id, a.endpoint_id, date_trunc('hour', a.started_at)
$$;

CREATE FUNCTION event_type_daily_between(since timestamptz, until timestamptz)
RETURNS SETOF event_type_daily LANGUAGE sql STABLE
AS $$
    SELECT d.tenant_id, d.event_type, date_trunc('day', d.created_at),
           count(DISTINCT d.event_id), count(*), count(*) FILTER (WHERE d.status = 'failed'),
           (count(*) FILTER (WHERE d.status = 'failed'))::float8 / count(*)
    FROM deliveries d
    WHERE NOT d.test
      AND d.id >= ledger_id_at(since - interval '1 hour')
      AND d.id < ledger_id_at(until + interval '1 hour')
      AND d.created_at >= since AND d.created_at < until
    GROUP BY d.tenant_id, d.event_type, date_trunc('day', d.created_at)
$$;
