-- Certificate issuance. issuing_cas: the CAs dps issues device
-- certificates with, by folded name; chain is a JSON array of base64 DER
-- certificates (the CA's first), sealed_key its private key as the
-- issuance service sealed it (never in the clear). credential_policies:
-- how certificates are issued (ca is the folded CA name; key_types
-- comma-separated, '' for all). issued_certificates: every certificate
-- issued, by serial number (upper-case hex), with the registration
-- operation that asked for it (NULL for a renewal on the hub: one
-- operation gets one certificate), the device it is for (hub and
-- device_id folded, device_name as given) and when it was revoked (0:
-- never). Times are Unix nanoseconds.
CREATE TABLE issuing_cas (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	etag       TEXT NOT NULL,
	key_type   TEXT NOT NULL,
	chain      TEXT NOT NULL,
	sealed_key BLOB NOT NULL,
	created    INTEGER NOT NULL,
	updated    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE credential_policies (
	id            TEXT PRIMARY KEY,
	name          TEXT NOT NULL,
	ca            TEXT NOT NULL,
	etag          TEXT NOT NULL,
	validity_days INTEGER NOT NULL,
	key_types     TEXT NOT NULL,
	subject       TEXT NOT NULL,
	created       INTEGER NOT NULL,
	updated       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX credential_policies_by_ca ON credential_policies (ca);
CREATE TABLE issued_certificates (
	serial          TEXT PRIMARY KEY,
	ca              TEXT NOT NULL,
	policy          TEXT NOT NULL,
	registration_id TEXT NOT NULL,
	hub             TEXT NOT NULL,
	device_id       TEXT NOT NULL,
	device_name     TEXT NOT NULL,
	operation_id    TEXT UNIQUE,
	certificate     BLOB NOT NULL,
	not_before      INTEGER NOT NULL,
	not_after       INTEGER NOT NULL,
	issued          INTEGER NOT NULL,
	revoked         INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX issued_certificates_by_device ON issued_certificates (hub, device_id);
CREATE INDEX issued_certificates_revoked ON issued_certificates (ca, revoked) WHERE revoked <> 0;
