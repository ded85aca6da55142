-- Herald schema v3: views for the common questions analysts ask of the ledger, and the index
-- that keeps the delivery log filtered by event type fast.

CREATE INDEX deliveries_tenant_type ON deliveries (tenant_id, event_type, id DESC);

-- Per endpoint and hour (by attempt start): attempts, deliveries attempted, successes, success
-- rate, latency percentiles and retries (attempts after the first).
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

-- Per event type and day (by delivery creation, test sends excluded): events, deliveries, and
-- how many ended failed.
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
