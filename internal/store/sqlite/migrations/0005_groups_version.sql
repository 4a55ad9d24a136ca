-- A counter bumped in the transaction of every write to groups, whoever
-- makes it: stores keep the decoded groups in memory and read this one row
-- to know whether they are still current.
CREATE TABLE groups_version (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	version INTEGER NOT NULL
);
INSERT INTO groups_version (id, version) VALUES (1, 0);
CREATE TRIGGER groups_version_insert AFTER INSERT ON groups BEGIN
	UPDATE groups_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER groups_version_update AFTER UPDATE ON groups BEGIN
	UPDATE groups_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER groups_version_delete AFTER DELETE ON groups BEGIN
	UPDATE groups_version SET version = version + 1 WHERE id = 1;
END;

-- One row per node, rewritten by readiness checks: proof the store takes writes.
CREATE TABLE heartbeats (
	node TEXT PRIMARY KEY,
	at   INTEGER NOT NULL
);
