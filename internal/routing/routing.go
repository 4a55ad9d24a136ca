// Package routing delivers the built-in hubs' event logs to endpoints:
// per hub, routes select messages by source and condition and hand them,
// in batches and in log order, to an Endpoint; a durable checkpoint per
// route in the store records how far the route got, so that every
// accepted message leaves for the endpoint at least once (duplicates
// after a failure or a takeover are allowed), in order per device. On
// several nodes a lease in the store lets one node at a time deliver a
// route; another takes it over when that node's lease runs out.
package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/opendps/dps"
)

// Endpoint delivers routed messages. Deliver returns nil only when the
// endpoint acknowledged every message of msgs (in order); on an error
// none counts as delivered and the engine retries the whole batch later
// (duplicates are allowed).
//
// An error that has a method Permanent() bool answering true says the
// endpoint will never take some message of the batch as it is (a webhook's
// 400, a message over the endpoint's size limit): the engine then delivers
// the batch's messages one by one and dead-letters at once each one that
// is refused for good, instead of retrying the whole batch for the retry
// budget. Only an error about the message itself may say so: one about
// the endpoint (credentials, permissions, a missing topic or URL) is an
// outage, retried. As a safety net, when the endpoint refuses every
// message of a batch of several on its own, the engine takes it for an
// outage of the endpoint and retries the batch instead.
type Endpoint interface {
	Deliver(ctx context.Context, msgs []dps.Message) error
	Close() error
}

// permanent is the ability of an endpoint's error to say it is final.
type permanent interface {
	error
	Permanent() bool
}

// IsPermanent reports whether err says the endpoint will never take the
// messages it was given.
func IsPermanent(err error) bool {
	p, ok := errors.AsType[permanent](err)
	return ok && p.Permanent()
}

// ReasonRefused is the dead-letter reason of a message an endpoint refused
// for good.
const ReasonRefused = "refused"

// Store is what the engine needs of the store: the hubs' event logs and
// the routes' checkpoints, leases and dead letters (see the stores'
// methods of the same names).
type Store interface {
	Messages(ctx context.Context, hub string, after int64, limit int) ([]dps.Message, error)
	LastMessageSeq(ctx context.Context, hub string) (int64, error)
	ClaimRoute(ctx context.Context, hub, route, node string, now, until time.Time) (dps.RouteState, bool, error)
	AdvanceRoute(ctx context.Context, hub, route, node string, checkpoint int64, lastError string, now time.Time) error
	ReleaseRoute(ctx context.Context, hub, route, node string) error
	Routes(ctx context.Context, hub string) ([]dps.RouteState, error)
	DeadLetterMessages(ctx context.Context, hub, route, node string, msgs []dps.Message, reason string, now time.Time) error
	DeadLetters(ctx context.Context, hub, route string, after int64, limit int) ([]dps.DeadLetter, error)
	DeleteDeadLettersBefore(ctx context.Context, t time.Time) (int64, error)
	TrimDeadLetters(ctx context.Context, hub, route string, keep int) (int64, error)
}

// Source is where the messages of a route come from: the value of a
// message's iothub-message-source system property, by its configuration
// name.
type Source string

// The sources of routes (IoT Hub's routing sources).
const (
	SourceTelemetry       Source = "telemetry"
	SourceDeviceLifecycle Source = "deviceLifecycle"
	SourceTwinChange      Source = "twinChange"
	SourceConnection      Source = "deviceConnectionState"
)

// PropMessageSource is the system property naming a message's source,
// with the values MessageSource gives.
const PropMessageSource = "iothub-message-source"

// MessageSource is the iothub-message-source value of a source's messages
// (Azure's spelling).
func (s Source) MessageSource() string {
	switch s {
	case SourceDeviceLifecycle:
		return "deviceLifecycleEvents"
	case SourceTwinChange:
		return "twinChangeEvents"
	case SourceConnection:
		return "deviceConnectionStateEvents"
	}
	return "Telemetry"
}

// ParseSource checks a configured source name.
func ParseSource(s string) (Source, error) {
	switch src := Source(s); src {
	case SourceTelemetry, SourceDeviceLifecycle, SourceTwinChange, SourceConnection:
		return src, nil
	case "":
		return SourceTelemetry, nil
	}
	return "", fmt.Errorf("unknown route source %q (telemetry, deviceLifecycle, twinChange or deviceConnectionState)", s)
}

// SourceOf is the source of a message: the one its iothub-message-source
// names, telemetry without one.
func SourceOf(m dps.Message) Source {
	switch m.System[PropMessageSource] {
	case "deviceLifecycleEvents":
		return SourceDeviceLifecycle
	case "twinChangeEvents":
		return SourceTwinChange
	case "deviceConnectionStateEvents":
		return SourceConnection
	}
	return SourceTelemetry
}

// Route is one configured route of a built-in hub.
type Route struct {
	Hub      string // the hub's host name
	Name     string // unique in its hub
	Source   Source
	Query    string     // the condition as written ("true" by default)
	Cond     *Condition // compiled from Query (nil: true)
	Endpoint string     // the endpoint's name
	Deliver  Endpoint
	Enabled  bool
}

// Observer receives the engine's measurements (internal/prom implements
// it). Every method is called with the hub and the route's name.
type Observer interface {
	Delivered(hub, route string, n int)
	Failed(hub, route string, n int)
	DeadLettered(hub, route, why string, n int)
	// DeadLettersDropped counts dead letters the route did not keep for
	// its cap (MaxDeadLetters): its oldest ones deleted past the cap, and
	// those of the messages it gave up on for falling more than MaxLag
	// behind (counted by DeadLettered too) that were not among the newest
	// MaxDeadLetters positions, never written.
	DeadLettersDropped(hub, route string, n int)
	// Lag is how far the route is behind: messages of the log after its
	// checkpoint, and the age of the oldest of them.
	Lag(hub, route string, messages int64, age time.Duration)
}

// Declarer is an Observer that wants to know every route before its first
// measurement (internal/prom exposes the route's series at zero); New
// tells it each route with the dead-letter reasons DeadLettered may pass.
type Declarer interface {
	Declare(hub, route string, reasons ...string)
}

// The reasons of Observer.DeadLettered: the retry budget ran out, the
// route fell more than MaxLag behind, retention deleted the messages
// before the route delivered them.
const (
	ReasonRetries = "retries"
	ReasonMaxLag  = "maxLag"
	ReasonDeleted = "deleted"
)

// Defaults of Options.
const (
	DefaultBatchSize   = 100
	DefaultLinger      = 20 * time.Millisecond
	DefaultPoll        = 250 * time.Millisecond
	DefaultLease       = 30 * time.Second
	DefaultRetryBudget = time.Hour
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = time.Minute
	DefaultMaxLag      = 1_000_000
	DefaultDeadLetters = 7 * 24 * time.Hour
	// DefaultMaxDeadLetters is how many dead letters a route keeps.
	DefaultMaxDeadLetters = 10_000
	// DefaultPruneBatch is the stores' default batch of TrimDeadLetters
	// (their Options.PruneBatch).
	DefaultPruneBatch = 5000
)

// Options configure an Engine.
type Options struct {
	Store  Store
	Routes []Route
	// Node names this node in the routes' leases.
	Node string
	// BatchSize is the most messages of one Deliver (DefaultBatchSize).
	BatchSize int
	// Linger is how long a batch that is not full waits for more messages
	// after its oldest one was enqueued (DefaultLinger; < 0: none).
	Linger time.Duration
	// Poll is how often a route that caught up looks for new messages
	// (DefaultPoll); Wake looks at once.
	Poll time.Duration
	// Lease is how long a node's claim on a route lasts (DefaultLease);
	// it renews it every third of that. A node that dies stops renewing
	// and another takes the route over after at most Lease.
	Lease time.Duration
	// RetryBudget is how long a batch is retried before its messages go
	// to dead letters (DefaultRetryBudget).
	RetryBudget time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries, doubled
	// from MinBackoff with jitter (1 s to 1 min by default).
	MinBackoff, MaxBackoff time.Duration
	// DeliverTimeout bounds one Deliver (default a third of Lease).
	DeliverTimeout time.Duration
	// MaxLag is the most messages a route may fall behind; past it its
	// oldest messages go to dead letters (DefaultMaxLag), so that the
	// event log's retention can delete them.
	MaxLag int64
	// DeadLetterRetention is how long dead letters are kept
	// (DefaultDeadLetters).
	DeadLetterRetention time.Duration
	// MaxDeadLetters is how many dead letters a route keeps at most
	// (≤ 0: DefaultMaxDeadLetters): past it its oldest ones (lowest Seq)
	// are deleted, so that a flood of messages the endpoint refuses does
	// not grow the store without bound. A route trims its dead letters
	// after every tenth of MaxDeadLetters new ones, and every route once
	// per dead-letter retention pass (a tenth of DeadLetterRetention, at
	// most an hour), so a route may hold up to a tenth more for a while.
	MaxDeadLetters int
	// PruneBatch is the size of a full batch of the store's
	// TrimDeadLetters (DefaultPruneBatch): a trim calls it again only
	// after a full batch.
	PruneBatch int
	Observer   Observer
	Logger     *slog.Logger
	Now        func() time.Time
	// Jitter returns a number in [0, 1) (default math/rand/v2).
	Jitter func() float64
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	def(&o.Linger, DefaultLinger)
	def(&o.Poll, DefaultPoll)
	def(&o.Lease, DefaultLease)
	def(&o.RetryBudget, DefaultRetryBudget)
	def(&o.MinBackoff, DefaultMinBackoff)
	def(&o.MaxBackoff, DefaultMaxBackoff)
	def(&o.DeliverTimeout, o.Lease/3)
	def(&o.DeadLetterRetention, DefaultDeadLetters)
	if o.MaxLag <= 0 {
		o.MaxLag = DefaultMaxLag
	}
	if o.MaxDeadLetters <= 0 {
		o.MaxDeadLetters = DefaultMaxDeadLetters
	}
	if o.PruneBatch <= 0 {
		o.PruneBatch = DefaultPruneBatch
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

type nopObserver struct{}

func (nopObserver) Delivered(string, string, int)            {}
func (nopObserver) Failed(string, string, int)               {}
func (nopObserver) DeadLettered(string, string, string, int) {}
func (nopObserver) DeadLettersDropped(string, string, int)   {}
func (nopObserver) Lag(string, string, int64, time.Duration) {}
