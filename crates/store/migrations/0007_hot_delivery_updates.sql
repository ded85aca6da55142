-- Herald schema v7: delivery rows updated in place (HOT).
--
-- A delivery row is inserted `pending` and updated when its first attempt is recorded (unless
-- both reach the ledger in one batch). With `status` in two of the table's seven indexes that
-- update could never be a heap-only (HOT) update: it added an entry to every index, and their
-- WAL. Under load that was a third of Postgres's CPU and a quarter of its WAL per delivery.
--
-- Now no index holds `status`:
-- - `retrying` and `failed` rows, the ones an operator filters for and replays, are found
--   through `problem`, a generated copy of the status that is NULL for `pending` and `success`.
--   The usual update, pending -> success, leaves it NULL, so no indexed value changes;
-- - a `pending` or `success` filter walks the time-ordered tenant and endpoint indexes
--   (pending rows are the newest ones, successes most of them);
-- - fillfactor 70 leaves each page room for the updated versions of its rows.
--
-- Adding a stored generated column rewrites the table once, under an exclusive lock.

ALTER TABLE deliveries SET (fillfactor = 70);
ALTER TABLE deliveries ADD COLUMN problem text
    GENERATED ALWAYS AS (CASE WHEN status IN ('retrying', 'failed') THEN status END) STORED;

DROP INDEX deliveries_tenant_status;
DROP INDEX deliveries_endpoint_status;
CREATE INDEX deliveries_tenant_problem ON deliveries (tenant_id, problem, id DESC)
    WHERE problem IS NOT NULL;
-- Replay: an endpoint's failed (or retrying) deliveries in creation order.
CREATE INDEX deliveries_endpoint_problem ON deliveries (endpoint_id, problem, id)
    WHERE problem IS NOT NULL;
