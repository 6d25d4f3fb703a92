-- Every change to buckets (by any front end, `euca migrate`, or by hand in psql)
-- notifies channel `euca_walrus_buckets`: each front end drops its cached bucket rows
-- on it (walrus/src/meta_pg.rs). One notification per statement; several in one
-- transaction arrive as one, at commit.
CREATE FUNCTION walrus_notify_buckets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('euca_walrus_buckets', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER walrus_buckets_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON walrus_buckets
    FOR EACH STATEMENT EXECUTE FUNCTION walrus_notify_buckets();
