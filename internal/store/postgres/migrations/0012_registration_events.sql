-- The registration-events feed: what happened to each register and poll
-- (accepted, refused, assigned, failed, webhook calls), in the order the
-- store appended it. registration_id and group_id are folded
-- (dps.FoldID) for the feed's filters; time is Unix nanoseconds, for
-- retention by age.
CREATE TABLE IF NOT EXISTS registration_events (
	seq             BIGINT PRIMARY KEY,
	time            BIGINT NOT NULL,
	kind            TEXT NOT NULL,
	registration_id TEXT NOT NULL,
	group_id        TEXT NOT NULL,
	doc             JSON NOT NULL
);
CREATE INDEX IF NOT EXISTS registration_events_by_registration ON registration_events (registration_id, seq);
CREATE INDEX IF NOT EXISTS registration_events_by_group ON registration_events (group_id, seq);
CREATE INDEX IF NOT EXISTS registration_events_by_time ON registration_events (time);
-- The last seq given to an event, advanced in the appending transaction:
-- the row lock serialises appends across nodes until they commit, so
-- events become visible in seq order (a reader that has read up to seq n
-- never later finds a smaller one), and seq never restarts when old
-- events are deleted.
CREATE TABLE IF NOT EXISTS registration_event_seq (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	last BIGINT NOT NULL
);
INSERT INTO registration_event_seq (id, last) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
