-- Finished operations are trimmed per registration ID (TrimOperations).
CREATE INDEX operations_by_registration ON operations (registration_id, created);
