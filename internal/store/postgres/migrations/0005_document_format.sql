-- Documents in the current format (internal/store/docs, format version 1):
-- every document an earlier release wrote (keyed by Go field names, no
-- version) is rewritten by this version's Go step (upgrade.go), in this
-- migration's transaction, after the statements below.
--
-- operations.group_id (0004) reads the group from the document, whose
-- member is now "enrollmentGroupId": the column is computed again on that
-- name (a generated column's expression cannot be altered).
ALTER TABLE operations DROP COLUMN IF EXISTS group_id;
ALTER TABLE operations ADD COLUMN group_id TEXT GENERATED ALWAYS AS (COALESCE(doc->>'enrollmentGroupId', '')) STORED;
