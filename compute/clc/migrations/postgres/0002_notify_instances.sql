-- Every change to an instance record notifies channel `euca_clc_instances`: a cloud
-- controller that does not reconcile (another holds the lease) rebuilds its DNS
-- index when it hears one (compute/clc/src/reconcile.rs), instead of now and then.
-- Several changes in one transaction arrive as one notification, at commit.
CREATE FUNCTION clc_notify_instances() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('euca_clc_instances', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER clc_instances_written
    AFTER INSERT OR UPDATE ON clc_records
    FOR EACH ROW WHEN (NEW.kind = 'instances')
    EXECUTE FUNCTION clc_notify_instances();
CREATE TRIGGER clc_instances_removed
    AFTER DELETE ON clc_records
    FOR EACH ROW WHEN (OLD.kind = 'instances')
    EXECUTE FUNCTION clc_notify_instances();
