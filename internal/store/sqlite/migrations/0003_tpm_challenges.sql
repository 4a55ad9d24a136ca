-- The latest TPM challenge of each registration ID.
CREATE TABLE tpm_challenges (
	id  TEXT PRIMARY KEY,
	doc BLOB NOT NULL
);
