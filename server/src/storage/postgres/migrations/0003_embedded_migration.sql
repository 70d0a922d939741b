-- The progress of `hattama-server migrate --to postgres` (storage/migrate.rs), kept in the
-- target so that an interrupted migration continues where it stopped: which embedded instance
-- this database is a copy of (its log's public key), how many of the source's objects are in
-- the object store already (of a list whose digest is kept, so a changed list starts over),
-- when the tables were copied (one transaction) and when the copy was last verified.
CREATE TABLE embedded_migration (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    source_log_key TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    objects_digest TEXT NOT NULL DEFAULT '',
    objects_copied BIGINT NOT NULL DEFAULT 0 CHECK (objects_copied >= 0),
    tables_copied_at_ms BIGINT,
    verified_at_ms BIGINT
);
