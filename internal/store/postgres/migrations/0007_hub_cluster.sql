-- The built-in hubs on several nodes. hub_presence says which node holds
-- each connected device's connection (one connection per device across
-- nodes); epoch grows with every claim, so a node told that another claim
-- replaced its connection closes only connections older than that claim.
CREATE SEQUENCE IF NOT EXISTS hub_presence_epoch;
CREATE TABLE IF NOT EXISTS hub_presence (
	hub       TEXT NOT NULL,
	device_id TEXT NOT NULL,
	node      TEXT NOT NULL,
	epoch     BIGINT NOT NULL,
	PRIMARY KEY (hub, device_id)
);
CREATE INDEX IF NOT EXISTS hub_presence_by_node ON hub_presence (node);
-- Messages between the nodes' hubs too large for a NOTIFY payload: the
-- notification carries "@" and the row's id; rows are deleted after a few
-- minutes.
CREATE TABLE IF NOT EXISTS hub_bus (
	id  BIGSERIAL PRIMARY KEY,
	at  TIMESTAMPTZ NOT NULL DEFAULT now(),
	doc BYTEA NOT NULL
);
