-- The built-in hubs' cloud-to-device queues: one row per message waiting
-- for its device, by hub and device (both folded). seq is the message's
-- sequence number and the queue's order. expiry, locked_until and enqueued
-- are Unix nanoseconds; lock_token is '' and locked_until 0 while the
-- message is not locked. properties is a JSON object of the application
-- properties (NULL: none). A row is deleted when its message is completed,
-- rejected, dead-lettered (expired, out of deliveries), purged, or its
-- device deleted. An enqueue takes a transaction-scoped advisory lock on
-- its device, so that the depth limit holds across nodes.
CREATE TABLE IF NOT EXISTS hub_c2d_messages (
	seq              BIGSERIAL PRIMARY KEY,
	hub              TEXT NOT NULL,
	device_id        TEXT NOT NULL,
	enqueued         BIGINT NOT NULL,
	expiry           BIGINT NOT NULL,
	lock_token       TEXT NOT NULL DEFAULT '',
	locked_until     BIGINT NOT NULL DEFAULT 0,
	delivery_count   INTEGER NOT NULL DEFAULT 0,
	message_id       TEXT NOT NULL DEFAULT '',
	correlation_id   TEXT NOT NULL DEFAULT '',
	user_id          TEXT NOT NULL DEFAULT '',
	ack              TEXT NOT NULL DEFAULT '',
	content_type     TEXT NOT NULL DEFAULT '',
	content_encoding TEXT NOT NULL DEFAULT '',
	properties       TEXT,
	body             BYTEA
);
CREATE INDEX IF NOT EXISTS hub_c2d_messages_by_device ON hub_c2d_messages (hub, device_id, seq);
