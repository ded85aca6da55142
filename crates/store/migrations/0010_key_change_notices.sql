-- Herald schema v10: a revoked (or deleted) API key is announced like the changes of 0008, as
-- its tenant's id, so every service's key cache drops the tenant's keys at once: revoking a
-- key through one ingest used to leave it working on the other services for their cache TTL.
CREATE TRIGGER api_keys_changed AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION herald_notify_change();
