-- The storage controllers' records (storage-controller/src/state.rs) when they are
-- kept in PostgreSQL (`[sc] meta_url`). Each SC owns its volumes' bytes on its own
-- disks, so each keeps its records under its own name (`[sc] name`), and only the
-- SC holding the lease `sc:<name>` in sc_leases writes them.
CREATE TABLE sc_records (
    sc text COLLATE "C" NOT NULL,     -- the SC's name
    kind text COLLATE "C" NOT NULL,   -- volumes, snapshots
    id text COLLATE "C" NOT NULL,     -- vol-…, snap-…
    value bytea NOT NULL,             -- the record's JSON
    PRIMARY KEY (sc, kind, id)
);
CREATE TABLE sc_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires timestamptz NOT NULL
);
