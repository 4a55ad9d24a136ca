-- The built-in hubs' event logs: every device-to-cloud message a hub
-- accepted, by hub (folded) and position. enqueued (Unix nanoseconds) is
-- for retention by time.
CREATE TABLE IF NOT EXISTS hub_messages (
	hub      TEXT NOT NULL,
	seq      BIGINT NOT NULL,
	enqueued BIGINT NOT NULL,
	doc      JSON NOT NULL,
	PRIMARY KEY (hub, seq)
);
CREATE INDEX IF NOT EXISTS hub_messages_by_enqueued ON hub_messages (enqueued);
-- The last Seq given to each hub's messages, advanced in the appending
-- transaction (INSERT … ON CONFLICT DO UPDATE … RETURNING): the row lock
-- serialises a hub's appends across nodes until they commit, so a hub's
-- messages become visible in Seq order, and Seq never restarts when old
-- messages are deleted.
CREATE TABLE IF NOT EXISTS hub_message_seqs (
	hub  TEXT PRIMARY KEY,
	last BIGINT NOT NULL
);
