-- Feedback of the built-in hubs' cloud-to-device messages. A queued
-- message keeps its device ID as sent (device_name; device_id is folded)
-- and the device's generation ID, which its feedback names.
-- hub_c2d_feedback holds one record per outcome a sender asked for
-- (iothub-ack), by hub (folded), until the service completes the batch it
-- received under lock_token (locked_until, Unix nanoseconds; '' and 0 when
-- not locked). enqueued is when the outcome happened.
ALTER TABLE hub_c2d_messages ADD COLUMN device_name TEXT NOT NULL DEFAULT '';
ALTER TABLE hub_c2d_messages ADD COLUMN generation_id TEXT NOT NULL DEFAULT '';
CREATE INDEX hub_c2d_messages_by_expiry ON hub_c2d_messages (expiry);
CREATE TABLE hub_c2d_feedback (
	seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
	hub                 TEXT NOT NULL,
	original_message_id TEXT NOT NULL DEFAULT '',
	enqueued            INTEGER NOT NULL,
	status              TEXT NOT NULL,
	description         TEXT NOT NULL DEFAULT '',
	device_id           TEXT NOT NULL,
	generation_id       TEXT NOT NULL DEFAULT '',
	lock_token          TEXT NOT NULL DEFAULT '',
	locked_until        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX hub_c2d_feedback_by_hub ON hub_c2d_feedback (hub, seq);
CREATE INDEX hub_c2d_feedback_by_enqueued ON hub_c2d_feedback (enqueued);
