-- Walrus metadata, version 2: leases, so background work that must run once per
-- cloud (the lifecycle worker) runs on one front end at a time.
CREATE TABLE walrus_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires timestamptz NOT NULL
);
