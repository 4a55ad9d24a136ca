-- The sweeper lists unfinished operations every few seconds without their
-- documents, which hold the device's payload (up to 96 KB each, stored out
-- of line): the group an operation matched is kept in its row, computed
-- from the document when it is written (PendingOperationHeaders).
ALTER TABLE operations ADD COLUMN IF NOT EXISTS group_id TEXT GENERATED ALWAYS AS (COALESCE(doc->>'EnrollmentGroupID', '')) STORED;
