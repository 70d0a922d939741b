-- Refused upload requests per enrolled device and error code: a count and the first and latest
-- time, one row per pair however many refusals (as the embedded backend's REFUSALS_MIGRATION).
CREATE TABLE device_refusals (
    device_id TEXT NOT NULL REFERENCES devices (id),
    code TEXT NOT NULL,
    count BIGINT NOT NULL CHECK (count >= 1),
    first_at_ms BIGINT NOT NULL,
    last_at_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, code)
);
