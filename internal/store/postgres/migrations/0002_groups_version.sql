-- A counter bumped in the transaction of every write to groups, whoever
-- makes it: every node keeps the decoded groups in memory and reads this one
-- row per request to know whether they are still current.
CREATE TABLE IF NOT EXISTS groups_version (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	version BIGINT NOT NULL
);
INSERT INTO groups_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE OR REPLACE FUNCTION groups_version_bump() RETURNS trigger LANGUAGE plpgsql
	SET search_path FROM CURRENT AS $$
BEGIN
	UPDATE groups_version SET version = version + 1 WHERE id = 1;
	RETURN NULL;
END
$$;
CREATE TRIGGER groups_version_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON groups
	FOR EACH STATEMENT EXECUTE FUNCTION groups_version_bump();

-- One row per node, rewritten by readiness checks: proof the store takes writes.
CREATE TABLE IF NOT EXISTS heartbeats (
	node TEXT PRIMARY KEY,
	at   BIGINT NOT NULL
);
