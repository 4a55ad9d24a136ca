-- The built-in hubs' event logs: every device-to-cloud message a hub
-- accepted, by hub (folded) and position. Seq is given by the hub's row in
-- hub_message_seqs, advanced in the appending transaction, so it never
-- restarts when old messages are deleted. enqueued (Unix nanoseconds) is
-- for retention by time. An ordinary rowid table, not WITHOUT ROWID: a
-- message's document is usually several hundred bytes and may be 256 KB,
-- far above the small rows a WITHOUT ROWID table suits.
CREATE TABLE hub_messages (
	hub      TEXT NOT NULL,
	seq      INTEGER NOT NULL,
	enqueued INTEGER NOT NULL,
	doc      BLOB NOT NULL,
	PRIMARY KEY (hub, seq)
);
CREATE INDEX hub_messages_by_enqueued ON hub_messages (enqueued);
-- The last Seq given to each hub's messages.
CREATE TABLE hub_message_seqs (
	hub  TEXT PRIMARY KEY,
	last INTEGER NOT NULL
) WITHOUT ROWID;
