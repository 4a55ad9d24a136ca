package wire

import (
	"time"

	"github.com/opendps/dps"
)

// HubRoutes is the answer of GET /routes on a built-in hub's host (a dps
// extension): the hub's message routes, in configuration order.
type HubRoutes struct {
	Routes []HubRoute `json:"routes"` // [] when the hub has none
}

// HubRoute is one message route of a built-in hub and its progress.
type HubRoute struct {
	Name      string `json:"name"`
	Endpoint  string `json:"endpoint"`
	Source    string `json:"source"`
	Condition string `json:"condition"`
	Enabled   bool   `json:"enabled"`
	// State is what the answering node knows: delivering, retrying,
	// standby (another node holds the lease, or none yet), stopped,
	// disabled.
	State      string   `json:"state"`
	Checkpoint int64    `json:"checkpoint"`
	Lag        RouteLag `json:"lag"`
	// Owner is the node holding the route's lease until LeaseUntil (null
	// for none).
	Owner      *string `json:"owner"`
	LeaseUntil *string `json:"leaseUntil"`
	// LastError is why the last delivery failed, at LastErrorTime; null
	// once one succeeded again.
	LastError     *string `json:"lastError"`
	LastErrorTime *string `json:"lastErrorTime"`
	Updated       *string `json:"updated"`
	// Attempt counts the failed attempts of the batch being retried, the
	// next at RetryTime (the answering node's, while it delivers).
	Attempt   int     `json:"attempt"`
	RetryTime *string `json:"retryTime"`
	// The route's messages on the answering node since it started.
	Delivered    int64 `json:"delivered"`
	Failed       int64 `json:"failed"`
	DeadLettered int64 `json:"deadLettered"`
}

// RouteLag is how far a route is behind its hub's event log: the log
// positions after its checkpoint, and the age in seconds of the oldest.
type RouteLag struct {
	Messages int64   `json:"messages"`
	Seconds  float64 `json:"seconds"`
}

func optTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := Time(t)
	return &s
}

// HubRouteOf is the wire form of a route's status.
func HubRouteOf(s dps.RouteStatus) HubRoute {
	return HubRoute{
		Name: s.Name, Endpoint: s.Endpoint, Source: s.Source, Condition: s.Condition, Enabled: s.Enabled, State: s.State,
		Checkpoint: s.Checkpoint, Lag: RouteLag{Messages: s.Lag, Seconds: s.LagAge.Seconds()},
		Owner: nullable(s.Owner), LeaseUntil: optTime(s.LeaseUntil),
		LastError: nullable(s.LastError), LastErrorTime: optTime(s.LastErrorAt), Updated: optTime(s.Updated),
		Attempt: s.Attempt, RetryTime: optTime(s.RetryAt),
		Delivered: s.Delivered, Failed: s.Failed, DeadLettered: s.DeadLettered,
	}
}

// HubDeadLetters is the answer of GET /routes/{name}/deadletters: a page
// of the messages a route gave up on, in sequence number order.
type HubDeadLetters struct {
	DeadLetters []HubDeadLetter `json:"deadLetters"` // [] when none
	// Next is the after of the next read (the last sequence number
	// returned, or the after of this read when it returned none).
	Next int64 `json:"next"`
}

// HubDeadLetter is one message a route gave up on, and why.
type HubDeadLetter struct {
	Route   string   `json:"route"`
	Reason  string   `json:"reason"`
	Time    string   `json:"time"`
	Message HubEvent `json:"message"`
}

// HubDeadLettersOf is the wire form of a page of dead letters read after
// after.
func HubDeadLettersOf(after int64, dls []dps.DeadLetter) HubDeadLetters {
	out := HubDeadLetters{DeadLetters: make([]HubDeadLetter, len(dls)), Next: after}
	for i, d := range dls {
		out.DeadLetters[i] = HubDeadLetter{Route: d.Route, Reason: d.Reason, Time: Time(d.At), Message: HubEventOf(d.Message)}
		out.Next = max(out.Next, d.Message.Seq)
	}
	return out
}
