-- The whole schema of the PostgreSQL backend, as the SQLite backend's migrations leave it, with
-- the differences a server of many instances needs: photos and unfinished uploads as rows (one
-- place that every instance reads; the object-storage boundary takes them over), the log's
-- head and its published size as coordination rows, and an identity column where SQLite's
-- rowid gave an order.

CREATE TABLE elections (
    id TEXT PRIMARY KEY,
    definition BYTEA NOT NULL,
    imported_at_ms BIGINT NOT NULL,
    protocol_lines BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE precincts (
    election TEXT NOT NULL REFERENCES elections (id),
    id TEXT NOT NULL,
    number BIGINT NOT NULL,
    region TEXT NOT NULL,
    district TEXT NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (election, id)
);
CREATE TABLE invites (
    code TEXT PRIMARY KEY,
    ord BIGINT GENERATED ALWAYS AS IDENTITY,
    election TEXT NOT NULL REFERENCES elections (id),
    precincts TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    used_by TEXT,
    used_at_ms BIGINT,
    batch BIGINT,
    cancelled_at_ms BIGINT
);
CREATE INDEX invites_by_batch ON invites (batch);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    key BYTEA NOT NULL UNIQUE,
    election TEXT NOT NULL REFERENCES elections (id),
    enrolled_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE TABLE device_precincts (
    device_id TEXT NOT NULL REFERENCES devices (id),
    precinct TEXT NOT NULL,
    PRIMARY KEY (device_id, precinct)
);
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    manifest BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    length BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
-- The received bytes of an unfinished upload, one row per acknowledged PATCH, keyed by the
-- offset it starts at.
CREATE TABLE upload_chunks (
    upload_id TEXT NOT NULL,
    start BIGINT NOT NULL CHECK (start >= 0),
    bytes BYTEA NOT NULL,
    PRIMARY KEY (upload_id, start)
);
CREATE TABLE captures (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id),
    seq BIGINT NOT NULL,
    election TEXT NOT NULL,
    precinct TEXT NOT NULL,
    manifest BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    photo_sha256 TEXT NOT NULL,
    photo_bytes BIGINT NOT NULL,
    media_type TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    receipt BYTEA NOT NULL,
    log_index BIGINT NOT NULL UNIQUE CHECK (log_index >= 0)
);
CREATE INDEX captures_by_device ON captures (device_id, seq);
CREATE INDEX captures_by_precinct ON captures (election, precinct);
CREATE INDEX captures_by_photo ON captures (photo_sha256);
CREATE INDEX captures_by_device_precinct ON captures (device_id, election, precinct);
-- Stored photos by their SHA-256 (written once: a second capture of the same bytes shares it).
CREATE TABLE photos (
    sha256 TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL
);

-- The log. `log_head` is the one coordination row of commits: a commit takes it (FOR UPDATE)
-- to number its captures, so positions are given, and become visible, in commit order with no
-- gap, whichever instance commits. `log_published` holds the size of the newest checkpoint: the
-- compare-and-swap that appends a checkpoint moves it from the old size to the new one, so two
-- writers can never both publish for one size.
CREATE TABLE log_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_index BIGINT NOT NULL CHECK (next_index >= 0)
);
INSERT INTO log_head (id, next_index) VALUES (1, 0);
CREATE TABLE log_published (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL CHECK (size >= 0)
);
INSERT INTO log_published (id, size) VALUES (1, 0);
CREATE TABLE log_entries (
    idx BIGINT PRIMARY KEY CHECK (idx >= 0),
    entry BYTEA NOT NULL
);
CREATE TABLE log_hash_blocks (
    block BIGINT PRIMARY KEY CHECK (block >= 0),
    hashes BYTEA NOT NULL
        CHECK (length(hashes) BETWEEN 32 AND 2048 AND length(hashes) % 32 = 0)
);
CREATE TABLE checkpoints (
    size BIGINT PRIMARY KEY CHECK (size >= 0),
    note BYTEA NOT NULL
);

-- Official results: every import is kept as a numbered version.
CREATE TABLE official_versions (
    election TEXT NOT NULL REFERENCES elections (id),
    version BIGINT NOT NULL CHECK (version >= 1),
    imported_at_ms BIGINT NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    precincts BIGINT NOT NULL,
    PRIMARY KEY (election, version)
);
CREATE TABLE official_figures (
    election TEXT NOT NULL,
    version BIGINT NOT NULL,
    precinct TEXT NOT NULL,
    line TEXT NOT NULL,
    value BIGINT NOT NULL CHECK (value >= 0),
    PRIMARY KEY (election, version, precinct, line),
    FOREIGN KEY (election, version) REFERENCES official_versions (election, version)
);

-- The review.
CREATE TABLE users (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'coordinator', 'supervisor')),
    regions TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE sessions (
    token_sha256 BYTEA PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id),
    csrf TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
-- The review index; its watermark is the captures' log position (given in commit order).
CREATE TABLE review_index (
    capture_id TEXT PRIMARY KEY REFERENCES captures (id),
    log_index BIGINT NOT NULL UNIQUE,
    election TEXT NOT NULL,
    precinct TEXT NOT NULL,
    number BIGINT NOT NULL,
    region TEXT NOT NULL,
    district TEXT NOT NULL,
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    page BIGINT NOT NULL,
    pages BIGINT NOT NULL,
    kind TEXT NOT NULL,
    captured_at_ms BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    photo_sha256 TEXT NOT NULL,
    transcription TEXT,
    flags BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'new'
);
CREATE INDEX review_queue ON review_index
    (election, region, district, number, precinct, page, received_at_ms, capture_id);
CREATE INDEX review_queue_by_state ON review_index
    (election, state, region, district, number, precinct, page, received_at_ms, capture_id);
CREATE INDEX review_by_device ON review_index (device_id, seq);
CREATE INDEX review_by_photo ON review_index (photo_sha256);
CREATE INDEX review_by_precinct ON review_index (election, precinct);
CREATE TABLE review_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO review_generation (id, value) VALUES (1, 0);
CREATE TABLE decisions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    capture_id TEXT NOT NULL REFERENCES captures (id),
    user_id BIGINT NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL CHECK (kind IN ('accepted', 'rejected', 'flagged')),
    reason TEXT,
    at_ms BIGINT NOT NULL
);
CREATE INDEX decisions_by_capture ON decisions (capture_id, id);
CREATE TABLE entries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    election TEXT NOT NULL,
    precinct TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    values_json TEXT NOT NULL,
    reason TEXT,
    resolution BOOLEAN NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX entries_by_precinct ON entries (election, precinct, id);
CREATE TABLE transcriptions (
    election TEXT NOT NULL,
    precinct TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'disputed', 'verified')),
    values_json TEXT NOT NULL,
    verified_at_ms BIGINT,
    inconsistency_note TEXT,
    PRIMARY KEY (election, precinct)
);
CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    user_id BIGINT REFERENCES users (id),
    user_name TEXT,
    action TEXT NOT NULL,
    election TEXT,
    precinct TEXT,
    capture_id TEXT,
    before TEXT,
    after TEXT
);
CREATE INDEX audit_by_capture ON audit (capture_id);
CREATE INDEX audit_by_precinct ON audit (election, precinct);

-- Decisions, entries and audit events are append-only.
CREATE FUNCTION hattama_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER decisions_append_only BEFORE UPDATE OR DELETE ON decisions
    FOR EACH ROW EXECUTE FUNCTION hattama_append_only();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION hattama_append_only();
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION hattama_append_only();
