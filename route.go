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

// RouteStatus is a message route as the hub's service API shows it: its
// configuration, its progress in the store (whichever node delivers it)
// and what the node answering knows of it.
type RouteStatus struct {
	Hub, Name, Source, Condition, Endpoint string
	Enabled                                bool
	// State is the answering node's view: "delivering" or "retrying" (it
	// holds the lease), "standby" (another node does, or none yet),
	// "stopped", "disabled".
	State      string
	Owner      string // the node holding the lease ("" none)
	LeaseUntil time.Time
	Checkpoint int64
	// Lag is how many positions of the log are after the checkpoint
	// (messages of other sources included), LagAge how long the oldest of
	// them has been in the log (0 with none).
	Lag         int64
	LagAge      time.Duration
	LastError   string
	LastErrorAt time.Time
	Updated     time.Time
	Attempt     int       // failed attempts of the current batch (this node)
	RetryAt     time.Time // when it is tried again (this node)
	// Delivered, Failed and DeadLettered count the route's messages on
	// the answering node since it started: acknowledged by the endpoint,
	// in a failed delivery (each attempt), given up on.
	Delivered, Failed, DeadLettered int64
}
