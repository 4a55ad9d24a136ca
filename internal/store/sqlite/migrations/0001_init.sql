CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

-- Individual enrollments, keyed by the lower-cased registration ID.
CREATE TABLE enrollments (
	id   TEXT PRIMARY KEY,
	etag TEXT NOT NULL,
	doc  BLOB NOT NULL
);

-- Enrollment groups, keyed by the lower-cased group ID.
CREATE TABLE groups (
	id          TEXT PRIMARY KEY,
	attestation TEXT NOT NULL,
	etag        TEXT NOT NULL,
	doc         BLOB NOT NULL
);

-- Registration records (DeviceRegistrationState), keyed by the lower-cased registration ID.
CREATE TABLE registrations (
	id       TEXT PRIMARY KEY,
	group_id TEXT NOT NULL DEFAULT '',
	etag     TEXT NOT NULL,
	doc      BLOB NOT NULL
);
CREATE INDEX registrations_by_group ON registrations (group_id, id);

-- Registration operations.
CREATE TABLE operations (
	id              TEXT PRIMARY KEY,
	registration_id TEXT NOT NULL,
	status          TEXT NOT NULL,
	created         INTEGER NOT NULL,
	doc             BLOB NOT NULL
);
CREATE INDEX operations_pending ON operations (created) WHERE status = 'assigning';
CREATE INDEX operations_by_created ON operations (created);

-- Device identities recorded by the built-in hub connector.
CREATE TABLE hub_devices (
	hub       TEXT NOT NULL,
	device_id TEXT NOT NULL,
	doc       BLOB NOT NULL,
	PRIMARY KEY (hub, device_id)
);
