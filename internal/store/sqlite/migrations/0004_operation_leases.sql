-- Operations are owned by one worker at a time through a lease.
ALTER TABLE operations ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE operations ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
