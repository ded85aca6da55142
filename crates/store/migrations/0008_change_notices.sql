-- Herald schema v8: changes that caches depend on are announced with NOTIFY.
--
-- Every ingest caches a tenant's subscription index and every dispatcher caches endpoints, each
-- for a few seconds. A toggle, a delete or a new secret made through one ingest used to reach
-- the other processes only when their entry expired: an endpoint switched off could still get
-- a retry for up to the dispatcher's HERALD_ENDPOINT_CACHE_TTL. Now each such change sends a
-- notice on the channel `herald_changes`, and every process drops what it holds for it at once
-- (the TTL stays as the fallback for a lost notice, e.g. while a listener reconnects).
--
-- Payload: `<tenant id>` (a tenant setting or its event types changed: drop everything of the
-- tenant) or `<tenant id> <endpoint id>` (one endpoint changed). Only changes a cache can see
-- send one: the failure-streak bookkeeping that dispatchers write on every failed delivery
-- does not (NOTIFY serialises commits, so it must stay off the hot path).

CREATE FUNCTION herald_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_data record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        row_data := OLD;
    ELSE
        row_data := NEW;
    END IF;
    IF TG_TABLE_NAME = 'endpoints' THEN
        PERFORM pg_notify('herald_changes', row_data.tenant_id::text || ' ' || row_data.id::text);
    ELSIF TG_TABLE_NAME = 'tenants' THEN
        PERFORM pg_notify('herald_changes', row_data.id::text);
    ELSE
        PERFORM pg_notify('herald_changes', row_data.tenant_id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER endpoints_created_or_deleted AFTER INSERT OR DELETE ON endpoints
    FOR EACH ROW EXECUTE FUNCTION herald_notify_change();

-- Every column a delivery or a subscription depends on; not the streak counters.
CREATE TRIGGER endpoints_changed AFTER UPDATE ON endpoints
    FOR EACH ROW
    WHEN ((OLD.url, OLD.event_types, OLD.enabled, OLD.signing_scheme, OLD.secret,
           OLD.secret_key_id, OLD.previous_secret, OLD.previous_secret_key_id,
           OLD.previous_secret_expires_at, OLD.timeout_ms, OLD.retry_schedule_ms, OLD.headers,
           OLD.filter, OLD.rate_limit_per_second, OLD.disabled_reason)
          IS DISTINCT FROM
          (NEW.url, NEW.event_types, NEW.enabled, NEW.signing_scheme, NEW.secret,
           NEW.secret_key_id, NEW.previous_secret, NEW.previous_secret_key_id,
           NEW.previous_secret_expires_at, NEW.timeout_ms, NEW.retry_schedule_ms, NEW.headers,
           NEW.filter, NEW.rate_limit_per_second, NEW.disabled_reason))
    EXECUTE FUNCTION herald_notify_change();

CREATE TRIGGER tenants_changed AFTER UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION herald_notify_change();

CREATE TRIGGER event_types_changed AFTER INSERT OR UPDATE OR DELETE ON event_types
    FOR EACH ROW EXECUTE FUNCTION herald_notify_change();
