-- Accounts and access keys (identity/src/pg.rs), when the cloud's metadata is in
-- PostgreSQL: every front end on the database accepts the same keys.
CREATE TABLE identity_accounts (
    name text PRIMARY KEY,
    id text NOT NULL UNIQUE,            -- 12-digit account number
    canonical_id text NOT NULL UNIQUE,  -- 64-hex canonical user id
    enabled boolean NOT NULL,
    created bigint NOT NULL             -- Unix seconds
);
CREATE TABLE identity_access_keys (
    access_key_id text PRIMARY KEY,
    secret_access_key text NOT NULL,
    account text NOT NULL REFERENCES identity_accounts (name),
    enabled boolean NOT NULL,
    created bigint NOT NULL
);
CREATE INDEX identity_access_keys_account ON identity_access_keys (account);
