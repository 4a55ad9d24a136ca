-- Documents are JSON (not JSONB): JSON keeps the text exactly, so a device's or a
-- webhook's payload is returned byte for byte.
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS enrollments (
	id   TEXT PRIMARY KEY,
	etag TEXT NOT NULL,
	doc  JSON NOT NULL
);

CREATE TABLE IF NOT EXISTS groups (
	id          TEXT PRIMARY KEY,
	attestation TEXT NOT NULL,
	etag        TEXT NOT NULL,
	doc         JSON NOT NULL
);

CREATE TABLE IF NOT EXISTS registrations (
	id       TEXT PRIMARY KEY,
	group_id TEXT NOT NULL DEFAULT '',
	etag     TEXT NOT NULL,
	doc      JSON NOT NULL
);
CREATE INDEX IF NOT EXISTS registrations_by_group ON registrations (group_id, id);

-- Operations are owned by one node at a time through a lease.
CREATE TABLE IF NOT EXISTS operations (
	id              TEXT PRIMARY KEY,
	registration_id TEXT NOT NULL,
	status          TEXT NOT NULL,
	created         BIGINT NOT NULL,
	owner           TEXT NOT NULL DEFAULT '',
	lease_until     BIGINT NOT NULL DEFAULT 0,
	doc             JSON NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_pending ON operations (created) WHERE status = 'assigning';
CREATE INDEX IF NOT EXISTS operations_by_created ON operations (created);

CREATE TABLE IF NOT EXISTS hub_devices (
	hub       TEXT NOT NULL,
	device_id TEXT NOT NULL,
	doc       JSON NOT NULL,
	PRIMARY KEY (hub, device_id)
);

CREATE TABLE IF NOT EXISTS ca_certificates (
	id   TEXT PRIMARY KEY,
	etag TEXT NOT NULL,
	doc  JSON NOT NULL
);

CREATE TABLE IF NOT EXISTS tpm_challenges (
	id  TEXT PRIMARY KEY,
	doc JSON NOT NULL
);
