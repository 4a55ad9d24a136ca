-- Message routes' progress (internal/routing): per hub (folded) and route
-- (as configured), the checkpoint (the last Seq of the hub's log the route
-- is done with) and the lease of the node delivering it (owner, until Unix
-- nanoseconds; '' and 0 for none). last_error and last_error_at (Unix
-- nanoseconds, 0 for none) say why the last delivery failed. A checkpoint
-- moves only under the lease (UPDATE … WHERE owner = $node AND
-- lease_until > $now), so a node that lost its lease cannot move it.
CREATE TABLE IF NOT EXISTS hub_routes (
	hub           TEXT NOT NULL,
	route         TEXT NOT NULL,
	checkpoint    BIGINT NOT NULL,
	owner         TEXT NOT NULL DEFAULT '',
	lease_until   BIGINT NOT NULL DEFAULT 0,
	last_error    TEXT NOT NULL DEFAULT '',
	last_error_at BIGINT NOT NULL DEFAULT 0,
	updated       BIGINT NOT NULL,
	PRIMARY KEY (hub, route)
);
-- The messages a route gave up on, with the reason: doc is the message's
-- document as in hub_messages, at (Unix nanoseconds) when it was given up.
CREATE TABLE IF NOT EXISTS hub_route_dead_letters (
	hub    TEXT NOT NULL,
	route  TEXT NOT NULL,
	seq    BIGINT NOT NULL,
	at     BIGINT NOT NULL,
	reason TEXT NOT NULL,
	doc    JSON NOT NULL,
	PRIMARY KEY (hub, route, seq)
);
CREATE INDEX IF NOT EXISTS hub_route_dead_letters_by_at ON hub_route_dead_letters (at);
