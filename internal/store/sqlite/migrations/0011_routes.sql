-- Message routes' progress (internal/routing): per hub (folded) and route
-- (as configured), the checkpoint (the last Seq of the hub's log the route
-- is done with) and the lease of the node delivering it (owner, until Unix
-- nanoseconds; '' and 0 for none). last_error and last_error_at (Unix
-- nanoseconds, 0 for none) say why the last delivery failed.
CREATE TABLE hub_routes (
	hub           TEXT NOT NULL,
	route         TEXT NOT NULL,
	checkpoint    INTEGER NOT NULL,
	owner         TEXT NOT NULL DEFAULT '',
	lease_until   INTEGER NOT NULL DEFAULT 0,
	last_error    TEXT NOT NULL DEFAULT '',
	last_error_at INTEGER NOT NULL DEFAULT 0,
	updated       INTEGER NOT NULL,
	PRIMARY KEY (hub, route)
) WITHOUT ROWID;
-- The messages a route gave up on, with the reason: doc is the message's
-- document as in hub_messages, at (Unix nanoseconds) when it was given up.
CREATE TABLE hub_route_dead_letters (
	hub    TEXT NOT NULL,
	route  TEXT NOT NULL,
	seq    INTEGER NOT NULL,
	at     INTEGER NOT NULL,
	reason TEXT NOT NULL,
	doc    BLOB NOT NULL,
	PRIMARY KEY (hub, route, seq)
);
CREATE INDEX hub_route_dead_letters_by_at ON hub_route_dead_letters (at);
