package main

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/prom"
	"github.com/opendps/dps/internal/regevents"
)

// EventsConfig configures the feeds an operator reads (the events: key).
type EventsConfig struct {
	RegistrationEvents RegistrationEventsConfig `yaml:"registrationEvents"`
}

// RegistrationEventsConfig configures the registration-events feed
// (dpsctl events, GET /registrationEvents).
type RegistrationEventsConfig struct {
	// Retention is how long events are kept (default 24h).
	Retention time.Duration `yaml:"retention"`
	// MaxEvents is how many events are kept at most, over every node
	// (default 100000).
	MaxEvents int64 `yaml:"maxEvents"`
	// PayloadLimit is the largest device payload an event keeps, in bytes
	// (default 4096); a larger one is left out (payloadTruncated).
	PayloadLimit int `yaml:"payloadLimit"`
}

func defaultEvents() EventsConfig {
	return EventsConfig{RegistrationEvents: RegistrationEventsConfig{Retention: regevents.DefaultRetention,
		MaxEvents: regevents.DefaultMaxEvents, PayloadLimit: regevents.DefaultPayloadLimit}}
}

func (c EventsConfig) validate(bad func(key, format string, args ...any)) {
	r := c.RegistrationEvents
	if r.Retention < time.Minute || r.Retention > 365*24*time.Hour {
		bad("events.registrationEvents.retention", "%s: must be between 1m and 8760h (365 days)", r.Retention)
	}
	if r.MaxEvents < 1 || r.MaxEvents > 1_000_000_000 {
		bad("events.registrationEvents.maxEvents", "%d: must be between 1 and 1000000000", r.MaxEvents)
	}
	if r.PayloadLimit < 1 || r.PayloadLimit > 96*1024 {
		bad("events.registrationEvents.payloadLimit", "%d: must be between 1 and 98304 bytes (a device payload is at most 96 KB)", r.PayloadLimit)
	}
}

// newEventLog is the registration-events feed of this node, on st.
func newEventLog(cfg Config, st regevents.Store, ops *prom.OperatorMetrics, log *slog.Logger) *regevents.Log {
	r := cfg.Events.RegistrationEvents
	return regevents.New(regevents.Options{Store: st, Node: cfg.NodeID, PayloadLimit: r.PayloadLimit, Retention: r.Retention,
		MaxEvents: r.MaxEvents, Observer: ops, Logger: log})
}

// timedStore is a store whose registration-path operations are timed
// (dps_store_operation_duration_seconds, by operation). Reads of the
// registration-events feed (the service API, the console) are not timed:
// they are no part of a registration.
type timedStore struct {
	store
	ops *prom.OperatorMetrics
}

func (t timedStore) Enrollment(ctx context.Context, id string) (dps.Enrollment, error) {
	defer t.ops.StoreCall("enrollment", time.Now())
	return t.store.Enrollment(ctx, id)
}

func (t timedStore) Group(ctx context.Context, id string) (dps.Group, error) {
	defer t.ops.StoreCall("group", time.Now())
	return t.store.Group(ctx, id)
}

func (t timedStore) Groups(ctx context.Context, at dps.AttestationType) ([]dps.Group, error) {
	defer t.ops.StoreCall("groups", time.Now())
	return t.store.Groups(ctx, at)
}

func (t timedStore) Registration(ctx context.Context, id string) (dps.Registration, error) {
	defer t.ops.StoreCall("registration", time.Now())
	return t.store.Registration(ctx, id)
}

func (t timedStore) Operation(ctx context.Context, id string) (dps.Operation, error) {
	defer t.ops.StoreCall("operation", time.Now())
	return t.store.Operation(ctx, id)
}

func (t timedStore) CreateOperation(ctx context.Context, op dps.Operation) (dps.Operation, error) {
	defer t.ops.StoreCall("createOperation", time.Now())
	return t.store.CreateOperation(ctx, op)
}

func (t timedStore) CreateOperationWithDevice(ctx context.Context, op dps.Operation, put dps.HubDevice, remove *dps.HubDevice) (dps.Operation, error) {
	defer t.ops.StoreCall("createOperation", time.Now())
	return t.store.CreateOperationWithDevice(ctx, op, put, remove)
}

func (t timedStore) CompleteOperation(ctx context.Context, op dps.Operation) (dps.Operation, error) {
	defer t.ops.StoreCall("completeOperation", time.Now())
	return t.store.CompleteOperation(ctx, op)
}

func (t timedStore) CompleteOperationWithDevice(ctx context.Context, op dps.Operation, put dps.HubDevice, remove *dps.HubDevice) (dps.Operation, error) {
	defer t.ops.StoreCall("completeOperation", time.Now())
	return t.store.CompleteOperationWithDevice(ctx, op, put, remove)
}

func (t timedStore) ClaimOperation(ctx context.Context, id, owner string, until time.Time) (bool, error) {
	defer t.ops.StoreCall("claimOperation", time.Now())
	return t.store.ClaimOperation(ctx, id, owner, until)
}

func (t timedStore) AppendRegistrationEvents(ctx context.Context, events []dps.RegistrationEvent) ([]dps.RegistrationEvent, error) {
	defer t.ops.StoreCall("appendRegistrationEvents", time.Now())
	return t.store.AppendRegistrationEvents(ctx, events)
}

// observedHubs is the hub connector with its failed calls counted per hub
// (dps_hub_failures_total). Embedding keeps the connector's optional
// abilities (twins, device records).
type observedHubs struct {
	*hubs
	ops *prom.OperatorMetrics
}

func (h observedHubs) Provision(ctx context.Context, d dps.HubDevice) error {
	err := h.hubs.Provision(ctx, d)
	if err != nil && ctx.Err() == nil {
		h.ops.HubFailed(d.Hub, "provision")
	}
	return err
}

func (h observedHubs) Deprovision(ctx context.Context, hub, deviceID string) error {
	err := h.hubs.Deprovision(ctx, hub, deviceID)
	if err != nil && ctx.Err() == nil {
		h.ops.HubFailed(hub, "deprovision")
	}
	return err
}

// countedListener counts a listener's connections (dps_connections_total,
// dps_connections_open).
type countedListener struct {
	net.Listener
	name string
	ops  *prom.OperatorMetrics
}

func countListener(ln net.Listener, name string, ops *prom.OperatorMetrics) net.Listener {
	if ops == nil {
		return ln
	}
	ops.DeclareListener(name)
	return &countedListener{Listener: ln, name: name, ops: ops}
}

func (l *countedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, closed: l.ops.Connected(l.name)}, nil
}

type countedConn struct {
	net.Conn
	once   sync.Once
	closed func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.closed)
	return c.Conn.Close()
}

// NetConn is the accepted connection.
func (c *countedConn) NetConn() net.Conn { return c.Conn }
