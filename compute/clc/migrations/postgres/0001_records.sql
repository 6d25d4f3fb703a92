-- The cloud controller's records (compute/clc/src/store_pg.rs), when its state is in
-- PostgreSQL (`[clc] meta_url`): several `euca clc` share them. Ids and owners order
-- as bytes (COLLATE "C"), as in redb, so pages of a listing are stable.
CREATE TABLE clc_records (
    kind text COLLATE "C" NOT NULL,   -- key_pairs, security_groups, images, ...
    id text COLLATE "C" NOT NULL,     -- the EC2 id (or a MAC, an address, ...)
    owner text COLLATE "C" NOT NULL,  -- the owning account's id
    value bytea NOT NULL,             -- the record's JSON
    PRIMARY KEY (kind, id)
);
CREATE INDEX clc_records_by_owner ON clc_records (kind, owner, id);
-- Background work that must run once per cloud (the instance reconciler) runs on
-- the front end holding its lease.
CREATE TABLE clc_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires timestamptz NOT NULL
);
