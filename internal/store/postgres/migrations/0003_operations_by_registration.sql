-- Finished operations are trimmed per registration ID (TrimOperations).
CREATE INDEX IF NOT EXISTS operations_by_registration ON operations (registration_id, created);
