-- Certificate issuance: see the SQLite store's migration 0015 (the same
-- tables and columns; times are Unix nanoseconds).
CREATE TABLE IF NOT EXISTS issuing_cas (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	etag       TEXT NOT NULL,
	key_type   TEXT NOT NULL,
	chain      TEXT NOT NULL,
	sealed_key BYTEA NOT NULL,
	created    BIGINT NOT NULL,
	updated    BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS credential_policies (
	id            TEXT PRIMARY KEY,
	name          TEXT NOT NULL,
	ca            TEXT NOT NULL,
	etag          TEXT NOT NULL,
	validity_days INTEGER NOT NULL,
	key_types     TEXT NOT NULL,
	subject       TEXT NOT NULL,
	created       BIGINT NOT NULL,
	updated       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS credential_policies_by_ca ON credential_policies (ca);
CREATE TABLE IF NOT EXISTS issued_certificates (
	serial          TEXT PRIMARY KEY,
	ca              TEXT NOT NULL,
	policy          TEXT NOT NULL,
	registration_id TEXT NOT NULL,
	hub             TEXT NOT NULL,
	device_id       TEXT NOT NULL,
	device_name     TEXT NOT NULL,
	operation_id    TEXT UNIQUE,
	certificate     BYTEA NOT NULL,
	not_before      BIGINT NOT NULL,
	not_after       BIGINT NOT NULL,
	issued          BIGINT NOT NULL,
	revoked         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS issued_certificates_by_device ON issued_certificates (hub, device_id);
CREATE INDEX IF NOT EXISTS issued_certificates_revoked ON issued_certificates (ca, revoked) WHERE revoked <> 0;
