-- The sweeper lists unfinished operations every few seconds without their
-- documents, which hold the device's payload (up to 96 KB each). The group
-- an operation matched is in its document: this partial index keeps it,
-- computed once when an unfinished operation is written, so the listing
-- reads the index only (PendingOperationHeaders).
ALTER TABLE operations ADD COLUMN group_id TEXT GENERATED ALWAYS AS (coalesce(json_extract(CAST(doc AS TEXT), '$.EnrollmentGroupID'), '')) VIRTUAL;
CREATE INDEX operations_pending_headers ON operations (created, id, registration_id, group_id) WHERE status = 'assigning';
