-- Every change to accounts or keys (by any front end, or by hand in psql) notifies
-- channel `euca_identity`: each process drops its cached credentials on it
-- (identity/src/pg.rs, CredentialCache). One notification per statement; several in
-- one transaction arrive as one, at commit.
CREATE FUNCTION identity_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('euca_identity', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER identity_accounts_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON identity_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION identity_notify_change();
CREATE TRIGGER identity_access_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON identity_access_keys
    FOR EACH STATEMENT EXECUTE FUNCTION identity_notify_change();
