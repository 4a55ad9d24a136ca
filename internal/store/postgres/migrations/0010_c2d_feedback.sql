-- Feedback of the built-in hubs' cloud-to-device messages. A queued
-- message keeps its device ID as sent (device_name; device_id is folded)
-- and the device's generation ID, which its feedback names.
-- hub_c2d_feedback holds one record per outcome a sender asked for
-- (iothub-ack), by hub (folded), until the service completes the batch it
-- received under lock_token (locked_until, Unix nanoseconds; '' and 0 when
-- not locked). enqueued is when the outcome happened.
ALTER TABLE hub_c2d_messages ADD COLUMN IF NOT EXISTS device_name TEXT NOT NULL DEFAULT '';
ALTER TABLE hub_c2d_messages ADD COLUMN IF NOT EXISTS generation_id TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS hub_c2d_messages_by_expiry ON hub_c2d_messages (expiry);
CREATE TABLE IF NOT EXISTS hub_c2d_feedback (
	seq                 BIGSERIAL PRIMARY KEY,
	hub                 TEXT NOT NULL,
	original_message_id TEXT NOT NULL DEFAULT '',
	enqueued            BIGINT NOT NULL,
	status              TEXT NOT NULL,
	description         TEXT NOT NULL DEFAULT '',
	device_id           TEXT NOT NULL,
	generation_id       TEXT NOT NULL DEFAULT '',
	lock_token          TEXT NOT NULL DEFAULT '',
	locked_until        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS hub_c2d_feedback_by_hub ON hub_c2d_feedback (hub, seq);
CREATE INDEX IF NOT EXISTS hub_c2d_feedback_by_enqueued ON hub_c2d_feedback (enqueued);
