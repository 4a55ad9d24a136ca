-- Documents in the current format (internal/store/docs, format version 1):
-- every document an earlier release wrote (keyed by Go field names, no
-- version) is rewritten by this version's Go step (upgrade.go), in this
-- migration's transaction, after the statements below.
--
-- operations.group_id (0007) reads the group from the document, whose
-- member is now "enrollmentGroupId": the column and its index are built
-- again on that name (SQLite cannot alter a generated column).
DROP INDEX operations_pending_headers;
ALTER TABLE operations DROP COLUMN group_id;
ALTER TABLE operations ADD COLUMN group_id TEXT GENERATED ALWAYS AS (coalesce(json_extract(CAST(doc AS TEXT), '$.enrollmentGroupId'), '')) VIRTUAL;
CREATE INDEX operations_pending_headers ON operations (created, id, registration_id, group_id) WHERE status = 'assigning';
