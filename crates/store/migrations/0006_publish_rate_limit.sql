-- Per-tenant publish rate limit in events per second: NULL follows the server's
-- HERALD_PUBLISH_RATE_LIMIT, 0 is unlimited.
ALTER TABLE tenants ADD COLUMN publish_rate_limit integer CHECK (publish_rate_limit >= 0);
