-- The registration-events feed: what happened to each register and poll
-- (accepted, refused, assigned, failed, webhook calls), in the order the
-- store appended it (seq, never reused: AUTOINCREMENT). registration_id
-- and group_id are folded (dps.FoldID) for the feed's filters; time is
-- Unix nanoseconds, for retention by age.
CREATE TABLE registration_events (
	seq             INTEGER PRIMARY KEY AUTOINCREMENT,
	time            INTEGER NOT NULL,
	kind            TEXT NOT NULL,
	registration_id TEXT NOT NULL,
	group_id        TEXT NOT NULL,
	doc             BLOB NOT NULL
);
CREATE INDEX registration_events_by_registration ON registration_events (registration_id, seq);
CREATE INDEX registration_events_by_group ON registration_events (group_id, seq);
CREATE INDEX registration_events_by_time ON registration_events (time);
