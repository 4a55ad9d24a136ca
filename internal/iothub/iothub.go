// Package iothub is the use case of dps's built-in IoT hubs, apart from any
// transport: it authenticates device connections against the identities
// that provisioning recorded, serves and updates their twins, accepts their
// telemetry into the hub's durable event log, and keeps track of the
// connected devices so that desired-property updates and direct-method
// calls reach them. internal/mqttapi and internal/httpapi speak the device
// protocol on top of it.
//
// A device identity is a dps.HubDevice in the store; its twin is the
// record's LiveTwin (internal/twin's stored form). Every change of a record
// is a compare-and-set on its ETag (dps.HubDevice.Replaces), retried when a
// concurrent write won, so a device's reported patch and a service's
// desired patch never lose each other.
package iothub

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opendps/dps"
)

// Store is the persistence the hub needs. Errors follow the registration
// store's contract: *dps.Error of KindNotFound, KindConflict (a Replaces
// precondition failed); anything else is the store's failure.
type Store interface {
	HubDevice(ctx context.Context, hub, deviceID string) (dps.HubDevice, error)
	ListHubDevices(ctx context.Context, hub, after string, limit int) ([]dps.HubDevice, error)
	// PutHubDevice writes d (with a new ETag) and returns it as written,
	// honouring d.Replaces.
	PutHubDevice(ctx context.Context, d dps.HubDevice) (dps.HubDevice, error)
	// AppendMessages appends messages to their hubs' event logs, durably,
	// and returns them with their Seq and Enqueued time.
	AppendMessages(ctx context.Context, msgs []dps.Message) ([]dps.Message, error)
	// The devices' cloud-to-device queues (c2d.go).
	CloudStore
}

// Options configure a Service.
type Options struct {
	Store Store
	// Hubs are the host names of the built-in hubs (a device addresses its
	// hub by one of them, in any case).
	Hubs []string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Skew is how long after its expiry a SAS token is still accepted
	// (default 5 minutes, as IoT Hub tolerates device clocks).
	Skew time.Duration
	// MaxMessageSize bounds a device-to-cloud message: body, system
	// property values and application property names and values (default
	// 256 KB, IoT Hub's limit).
	MaxMessageSize int
	// Cluster connects this node's hub to those of the other nodes that
	// share Store; nil when this node is alone.
	Cluster Cluster
	// Node is this node's name in the Cluster (default: random).
	Node   string
	Logger *slog.Logger
	// Events reads and prunes the event logs (events.go); nil: Events
	// and Sweep are not served.
	Events    EventLog
	Retention Retention
	// RouteFloor, when set, holds the retention back behind the message
	// routes' checkpoints (internal/routing; Events must then be a
	// RoutedEventLog).
	RouteFloor RouteFloor
	// Registry deletes, lists and counts identities (registry.go); nil:
	// Store's, if it implements RegistryStore (the SQLite and PostgreSQL
	// stores do), else those operations answer KindUnavailable.
	Registry RegistryStore
	// OnAppend, when set, is called after messages were appended to a
	// hub's event log by this node (telemetry and the hub's own events,
	// sources.go): the routing engine's Wake. It must not block.
	OnAppend func(hub string)
	// Certificates, when set, authenticates the certificateAuthority
	// identities with the certificates dps issued them, renews and
	// revokes them (certificates.go); nil: such identities cannot
	// connect.
	Certificates Certificates
}

// DefaultMaxMessageSize is IoT Hub's device-to-cloud message limit.
const DefaultMaxMessageSize = 256 * 1024

// Service is the built-in hubs' use case. It is safe for concurrent use.
type Service struct {
	o     Options
	hubs  map[string]string // folded host → configured host
	conns registry
	cl    clusterState
	// events wakes the readers waiting on a hub's event log (events.go).
	events notifier
	// lost counts the hub's own events that could not be appended
	// (sources.go); connSeq numbers the connection state events.
	lost    atomic.Int64
	connSeq atomic.Uint64
}

// New returns a Service.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Skew <= 0 {
		o.Skew = 5 * time.Minute
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if r, ok := o.Store.(RegistryStore); ok && o.Registry == nil {
		o.Registry = r
	}
	s := &Service{o: o, hubs: make(map[string]string, len(o.Hubs))}
	for _, h := range o.Hubs {
		s.hubs[strings.ToLower(h)] = h
	}
	s.conns.init()
	s.initCluster()
	return s
}

// Hub returns the configured host name of the built-in hub that host
// names (compared case-insensitively; a ":port" suffix is ignored), and
// whether there is one.
func (s *Service) Hub(host string) (string, bool) {
	if s == nil {
		return "", false
	}
	h, ok := s.hubs[strings.ToLower(stripPort(host))]
	return h, ok
}

// Hubs returns the built-in hubs' host names, as configured.
func (s *Service) Hubs() []string { return append([]string(nil), s.o.Hubs...) }

func stripPort(host string) string {
	if strings.HasPrefix(host, "[") { // [::1]:443
		if i := strings.Index(host, "]"); i >= 0 {
			return host[1:i]
		}
		return host
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.IndexByte(host, ':') == i {
		return host[:i]
	}
	return host
}

// Identity is who an authenticated device connection or request is.
type Identity struct {
	Hub          string // the hub's configured host name
	DeviceID     string // as the device identity has it
	GenerationID string // of the identity when it authenticated
	// Method is how the device authenticated: "sas" or "x509"
	// (iothub-connection-auth-method's type).
	Method string
	// Expires is when the SAS token the device authenticated with expires
	// (the transport ends a connection then); zero for a certificate.
	Expires time.Time
	// ModelID is the Plug and Play model the device announced (MQTT
	// username model-id), "" if none.
	ModelID string
	// CertificateSerial is the serial number of the certificate dps issued
	// that the device authenticated with (a certificateAuthority
	// identity), "" otherwise: what a renewal renews.
	CertificateSerial string
}
