-- Named consumers of the built-in hubs' event logs (GET
-- /messages/events?consumer=…): per hub (folded) and consumer (as given),
-- the last sequence number the consumer is done with; updated is Unix
-- nanoseconds.
CREATE TABLE IF NOT EXISTS hub_event_checkpoints (
	hub      TEXT NOT NULL,
	consumer TEXT NOT NULL,
	seq      BIGINT NOT NULL,
	updated  BIGINT NOT NULL,
	PRIMARY KEY (hub, consumer)
);
