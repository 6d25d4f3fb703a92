-- Which SC keeps its snapshots in which bucket: an SC sweeps the chunks none of its
-- own manifests name, so two SCs sharing a bucket would delete each other's.
CREATE TABLE sc_snapshot_buckets (
    bucket text COLLATE "C" PRIMARY KEY,
    sc text COLLATE "C" NOT NULL
);
