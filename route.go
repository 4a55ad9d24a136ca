package dps

import "time"

// RouteState is a message route's progress through its hub's event log,
// as the store keeps it: the durable checkpoint and the lease that lets
// one node at a time deliver the route.
type RouteState struct {
	Hub   string // the hub's host name, folded as stored
	Route string // the route's name, as configured
	// Checkpoint is the last Seq of the hub's log the route is done with:
	// delivered (acknowledged by its endpoint), filtered out or
	// dead-lettered. A route reads on after it.
	Checkpoint int64
	// Owner is the node holding the lease until LeaseUntil; it alone may
	// move the checkpoint while the lease lasts.
	Owner      string
	LeaseUntil time.Time
	// LastError is why the last delivery failed ("" once one succeeded
	// again), at LastErrorAt.
	LastError   string
	LastErrorAt time.Time
	// Updated is when the checkpoint or the error last changed.
	Updated time.Time
}

// DeadLetter is a message a route gave up on: its endpoint did not take
// it within the route's retry budget, or the route fell further behind
// than the event log keeps.
type DeadLetter struct {
	Route   string
	Message Message // Hub and Seq name it in the log
	Reason  string
	At      time.Time
}
