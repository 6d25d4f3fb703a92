-- Walrus metadata, version 1: the tables of walrus/src/meta_kv.rs, one per table,
-- keyed and ordered by bytes (bytea compares as memcmp), values as redb stores them.
CREATE TABLE walrus_buckets (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE walrus_objects (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE walrus_uploads (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE walrus_parts (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE walrus_completed (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE walrus_completed_by_time (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE walrus_versions (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE walrus_null_versions (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE walrus_counters (k bytea PRIMARY KEY, v bytea NOT NULL);
-- Version sequence numbers (a sequence: concurrent writers never conflict on it).
CREATE SEQUENCE walrus_version_seq AS bigint;
