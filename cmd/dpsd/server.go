package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/allocation"
	"github.com/opendps/dps/internal/allocation/webhookalloc"
	"github.com/opendps/dps/internal/connlimit"
	"github.com/opendps/dps/internal/console"
	"github.com/opendps/dps/internal/enrollment"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/hub/builtin"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/issuance"
	"github.com/opendps/dps/internal/mqttapi"
	"github.com/opendps/dps/internal/pki"
	"github.com/opendps/dps/internal/prom"
	"github.com/opendps/dps/internal/regevents"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/routing"
	"github.com/opendps/dps/internal/store/postgres"
	"github.com/opendps/dps/internal/store/sqlite"
	"github.com/opendps/dps/internal/symkey"
	"github.com/opendps/dps/internal/throttle"
	"github.com/opendps/dps/internal/tpmattest"
	"github.com/opendps/dps/internal/x509attest"
)

// store is everything dpsd needs from a store; SQLite and PostgreSQL both
// provide it.
type store interface {
	registration.Store
	tpmattest.Store // the TPM challenges
	enrollment.Store
	enrollment.CAStore
	builtin.Store
	iothub.Store
	iothub.EventLog
	issuance.Store
	routing.Store
	regevents.Store // the registration-events feed
	DeleteRoutedMessagesBefore(ctx context.Context, hub string, t time.Time, through int64) (int64, error)
	Meta(ctx context.Context, key, value string) (string, error)
	Ping(ctx context.Context) error
	// CheckWrite reports whether the store takes writes (readiness); it
	// writes node's heartbeat row at most every few seconds.
	CheckWrite(ctx context.Context, node string) error
	Close() error
}

// openStore opens the store named by the storage setting: sqlite:PATH or a
// postgres:// URL. singleNode reports that this process is the only one on
// the store (SQLite locks its database to one process); PostgreSQL may be
// shared by several nodes. On failure the store is a nil interface, never
// a nil *DB inside one (which a deferred Close would call).
func openStore(ctx context.Context, storage string) (st store, singleNode bool, err error) {
	if path, ok := strings.CutPrefix(storage, "sqlite:"); ok {
		db, err := sqlite.Open(ctx, path)
		if err != nil {
			return nil, false, err
		}
		return db, true, nil
	}
	db, err := postgres.Open(ctx, storage, postgres.Options{})
	if err != nil {
		return nil, false, err
	}
	return db, false, nil
}

// storageError is the one line dpsd exits with when the store does not
// open: the setting (password redacted) and the cause, with the password
// scrubbed from the cause too, whatever the driver put in it.
func storageError(storage string, err error) error {
	msg := err.Error()
	for _, secret := range dsnSecrets(storage) {
		msg = strings.ReplaceAll(msg, secret, "REDACTED")
	}
	msg = strings.Join(strings.Fields(msg), " ") // one line
	return fmt.Errorf("storage %s: %s", redactDSN(storage), msg)
}

// server is a running dpsd instance.
type server struct {
	cfg     Config
	log     *slog.Logger
	store   store
	reg     *registration.Service
	idScope string
	caFile  string // "" when the operator supplied the certificate
	owner   PolicyConfig
	// ownerGenerated: dpsd generated the owner policy's keys (the banner
	// prints a secret only then).
	ownerGenerated bool
	// hubOwners are the iothubowner policies dpsd generated, by hub (for
	// the banner: configured secrets are never printed).
	hubOwners map[string]PolicyConfig
	cert      *x509.Certificate // the server certificate
	hub       *iothub.Service   // the built-in hubs
	issuance  *issuance.Service // certificate issuance
	hubs      *hubs             // the hub connector: built-in and remote hubs (remotehubs.go)
	// stopBus ends the hub cluster's listener (PostgreSQL), busDone is
	// closed when it ended.
	stopBus context.CancelFunc
	busDone chan struct{}

	https, admin     *http.Server
	httpsLn, adminLn net.Listener
	mqtt             *mqttapi.Broker
	ready            atomic.Bool
	closed           atomic.Bool
	done             chan struct{}
	// stopRetention ends the event logs' retention sweep and waits for it.
	stopRetention func()
	// routes is the message routing engine (nil without routes);
	// stopRouting ends it and closes its endpoints.
	routes      *routing.Engine
	stopRouting func() error
	// throttle and faults guard the device transports, serviceThrottle
	// the service APIs (throttle.go).
	throttle        *throttle.Limiter
	serviceThrottle *throttle.ServiceLimiter
	faults          *faults.Injector
	// stopCerts ends the server certificate's daily check (tlsreload.go).
	stopCerts func()
	// connLimits bound the HTTPS and MQTT listeners' connections (limits.go).
	connLimits *connlimit.Limiter
	// console is the web console on the HTTPS listener (console.go); nil
	// when disabled.
	console *console.Handler
	// events is the registration-events feed, ops the operator metrics
	// (regevents.go).
	events *regevents.Log
	ops    *prom.OperatorMetrics
}

// startRetention runs the built-in hubs' event-log retention and the
// expiry sweep of their C2D queues until Close.
func (s *server) startRetention() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.hub.RunRetention(ctx) })
	wg.Go(func() { s.hub.RunC2DExpiry(ctx, 0) })
	s.stopRetention = func() { cancel(); wg.Wait() }
}

func newLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(cfg.Format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// start opens the store, recovers unfinished operations, and only then
// opens the listeners. Each adapter opens in its own function and leaves
// in s what Close needs, so a failure at any step closes what opened.
func start(ctx context.Context, cfg Config, logw io.Writer) (_ *server, err error) {
	log := newLogger(cfg.Log, logw)
	s := &server{cfg: cfg, log: log, done: make(chan struct{})}
	defer func() {
		if err != nil {
			s.Close(context.Background())
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("dataDir: %w", err)
	}
	var singleNode bool
	if s.store, singleNode, err = openStore(ctx, cfg.Storage); err != nil {
		return nil, storageError(cfg.Storage, err)
	}
	if err := s.loadInstanceState(ctx); err != nil {
		return nil, err
	}
	tlsCfg, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}
	metrics := prom.New()
	s.ops = metrics.Operator()
	for _, h := range cfg.LinkedHubs {
		s.ops.DeclareHub(h.HostName)
	}
	timed := timedStore{s.store, s.ops} // the registration path's store, timed
	s.events = newEventLog(cfg, timed, s.ops, log)
	s.events.Start()
	s.throttle = cfg.Throttling.limiter(metrics, log)
	s.serviceThrottle = cfg.Throttling.serviceLimiter(metrics, log)
	s.connLimits = cfg.Limits.connLimiter(metrics, log)
	if s.faults, err = newInjector(cfg.Faults, metrics, log); err != nil {
		return nil, err
	}
	if s.issuance, err = s.newIssuance(ctx); err != nil {
		return nil, err
	}
	hubOpts := iothub.Options{Store: s.store, Hubs: cfg.builtInHubs(), Node: cfg.NodeID, Logger: log, Events: s.store,
		Retention: iothub.Retention{Age: cfg.Hub.EventRetention, Messages: cfg.Hub.EventRetentionMessages}, Certificates: s.issuance}
	routes, endpoints, err := s.newRouting(ctx, s.store, metrics.Routes())
	if err != nil {
		return nil, err
	}
	if routes != nil {
		s.routes, hubOpts.RouteFloor = routes, routes
		hubOpts.OnAppend = routes.Wake // this node's appends; the routes poll for other nodes'
		s.startRouting(routes, endpoints)
	}
	if db, ok := s.store.(*postgres.DB); ok {
		// Several nodes may share the database: their hubs reach each
		// other's devices through it.
		bus := db.HubBus()
		if err := bus.Forget(ctx, cfg.NodeID); err != nil { // this node holds no connection yet
			return nil, storageError(cfg.Storage, err)
		}
		hubOpts.Cluster = bus
		s.hub = iothub.New(hubOpts)
		busCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
		s.stopBus, s.busDone = stop, make(chan struct{})
		go func() {
			defer close(s.busDone)
			bus.Listen(busCtx, log, s.hub.Deliver)
		}()
	} else {
		s.hub = iothub.New(hubOpts)
	}
	s.startRetention()
	if s.hubs, err = newHubs(cfg, s.store); err != nil {
		return nil, err
	}
	if s.reg, err = startEngine(ctx, cfg, timed, s.idScope, singleNode, metrics, s.hub, s.hubs, s.events, s.issuance, log); err != nil {
		return nil, err
	}
	device, err := s.deviceAPI()
	if err != nil {
		return nil, err
	}
	if err := s.applyManifests(ctx, device); err != nil { // manifest.go
		return nil, err
	}

	// Listeners open only now, when the instance can serve.
	if err := s.listen(tlsCfg); err != nil {
		return nil, err
	}
	s.https = serveHTTPS(s.httpsLn, s.httpsHandler(device), tlsCfg, cfg.Limits.httpsHeaderTimeout(), log)
	if s.mqtt != nil {
		if err := s.mqtt.Serve(); err != nil {
			return nil, fmt.Errorf("listen.mqtt: %w", err)
		}
	}
	if s.adminLn != nil {
		s.admin = serveAdmin(s.adminLn, s.adminHandler(metrics), log)
	}
	s.ready.Store(true)
	attrs := []any{"id_scope", s.idScope, "https", s.httpsLn.Addr().String()}
	if s.mqtt != nil {
		attrs = append(attrs, "mqtt", s.mqtt.Addr().String())
	}
	log.Info("dpsd ready", attrs...)
	return s, nil
}

// newIssuance is certificate issuance on the store, its CAs' keys sealed
// with issuance.keyEncryptionKey. A store that holds CAs the key does not
// open (or no key at all) is refused: dpsd does not start.
func (s *server) newIssuance(ctx context.Context) (*issuance.Service, error) {
	kek, err := s.cfg.Issuance.keyEncryptionKey()
	if err != nil {
		return nil, fmt.Errorf("issuance.keyEncryptionKey: %w", err)
	}
	iss, err := issuance.New(issuance.Options{Store: s.store, KeyEncryptionKey: kek, CRLURL: s.serviceURL(), Logger: s.log})
	if err != nil {
		return nil, err
	}
	if err := iss.CheckKeys(ctx); err != nil {
		return nil, fmt.Errorf("issuance: %w", err)
	}
	return iss, nil
}

// serviceURL is the base URL of the service API (https://host[:port]).
func (s *server) serviceURL() string {
	host := s.serviceHost()
	if _, port, err := net.SplitHostPort(s.cfg.Listen.HTTPS); err == nil && port != "443" && port != "0" {
		host = net.JoinHostPort(host, port)
	}
	return "https://" + host
}

// loadInstanceState sets the ID scope and the owner access policy: from
// the configuration, or else generated once and kept in the store, so they
// survive restarts and every node of one instance agrees on them.
func (s *server) loadInstanceState(ctx context.Context) error {
	s.idScope = s.cfg.IDScope
	if s.idScope == "" {
		var err error
		s.idScope, err = s.store.Meta(ctx, "idScope", "0ne"+strings.ToUpper(rand.Text()[:8]))
		if err != nil {
			return err
		}
	}
	if err := s.loadHubPolicies(ctx); err != nil {
		return err
	}
	if len(s.cfg.AccessPolicies) > 0 {
		s.owner = s.cfg.AccessPolicies[0]
		return nil
	}
	s.ownerGenerated = true // the banner may print it
	k1, err := s.store.Meta(ctx, "owner.primaryKey", newKey())
	if err != nil {
		return err
	}
	k2, err := s.store.Meta(ctx, "owner.secondaryKey", newKey())
	if err != nil {
		return err
	}
	s.owner = PolicyConfig{Name: "provisioningserviceowner", PrimaryKey: k1, SecondaryKey: k2,
		Rights: []string{"ServiceConfig", "EnrollmentRead", "EnrollmentWrite", "RegistrationStatusRead", "RegistrationStatusWrite"}}
	s.cfg.AccessPolicies = []PolicyConfig{s.owner}
	return nil
}

// loadHubPolicies gives every built-in hub without configured access
// policies an iothubowner policy with every right, its keys generated once
// and kept in the store.
func (s *server) loadHubPolicies(ctx context.Context) error {
	s.hubOwners = map[string]PolicyConfig{}
	for i := range s.cfg.LinkedHubs {
		h := &s.cfg.LinkedHubs[i]
		if !h.BuiltIn() || len(h.AccessPolicies) > 0 {
			continue
		}
		prefix := "hub." + strings.ToLower(h.HostName) + ".iothubowner."
		k1, err := s.store.Meta(ctx, prefix+"primaryKey", newHubKey())
		if err != nil {
			return err
		}
		k2, err := s.store.Meta(ctx, prefix+"secondaryKey", newHubKey())
		if err != nil {
			return err
		}
		p := PolicyConfig{Name: "iothubowner", PrimaryKey: k1, SecondaryKey: k2, Rights: hubRights()}
		h.AccessPolicies = []PolicyConfig{p}
		s.hubOwners[h.HostName] = p
	}
	return nil
}

// builtInHubs are the host names of the hubs dpsd serves.
func (c Config) builtInHubs() []string {
	var out []string
	for _, h := range c.LinkedHubs {
		if h.BuiltIn() {
			out = append(out, h.HostName)
		}
	}
	return out
}

// startEngine builds the registration engine on st and starts it (which
// recovers unfinished operations). When it returns an engine, the caller
// closes it; when it fails, nothing is left open.
func startEngine(ctx context.Context, cfg Config, st timedStore, idScope string, singleNode bool, metrics *prom.Metrics, hub *iothub.Service, hubs *hubs, events *regevents.Log, iss *issuance.Service, log *slog.Logger) (*registration.Service, error) {
	webhookClient, err := webhookHTTPClient(cfg.Webhook)
	if err != nil {
		return nil, err
	}
	var secret []byte
	if cfg.Webhook.SigningSecret != "" {
		secret = []byte(cfg.Webhook.SigningSecret)
	}
	allocators := map[dps.AllocationPolicy]registration.Allocator{
		dps.AllocationHashed:     allocation.Hashed{},
		dps.AllocationGeoLatency: allocation.GeoLatency{Location: cfg.Location},
		dps.AllocationStatic:     allocation.Static{},
		dps.AllocationCustom: webhookalloc.New(webhookalloc.Options{
			Client:      webhookClient,
			Timeout:     cfg.Webhook.Timeout,
			RetryBudget: cfg.Webhook.RetryBudget,
			Secret:      secret,
			Logger:      log,
			Events:      events,
		}),
	}
	policy, _ := dps.ParseAllocationPolicy(cfg.AllocationPolicy)
	var crls *x509attest.CRLs
	if len(cfg.X509.CRLFiles) > 0 {
		if crls, err = x509attest.LoadCRLs(cfg.X509.CRLFiles); err != nil {
			return nil, fmt.Errorf("x509.crlFiles: %w", err)
		}
	}
	// The attestation mechanisms, one per type: adding one is a package and
	// an entry here (docs/adding-an-attestation.md).
	attestors := map[dps.AttestationType]registration.Attestor{
		dps.AttestationSymmetricKey: symkey.New(symkey.Options{Store: st}),
		dps.AttestationX509:         x509attest.New(x509attest.Options{Store: st, CRLs: crls, Logger: log}),
		dps.AttestationTPM:          tpmattest.New(tpmattest.Options{Store: st, IDScope: idScope}),
	}
	reg := registration.New(registration.Options{
		IDScope:            idScope,
		LinkedHubs:         cfg.linkedHubs(),
		DefaultPolicy:      policy,
		Allocators:         allocators,
		Hubs:               observedHubs{hubs, st.ops},
		Store:              st,
		Logger:             log,
		Observer:           metrics,
		Attestors:          attestors,
		NodeID:             cfg.NodeID,
		Lease:              cfg.OperationLease,
		WebhookConcurrency: cfg.Webhook.MaxConcurrency,
		SweepInterval:      min(5*time.Second, cfg.OperationLease/2),
		SingleNode:         singleNode,
		HubRetryFor:        cfg.HubRetryBudget, // 0: the default
		// The built-in connector records devices in st, so the engine
		// writes built-in hubs' records in each operation's transaction;
		// remote hubs are provisioned through their connectors.
		RecordsDevices: hubs.records,
		HubEvents:      hub, // the built-in hub acts on its connections
		Events:         events,
		Issuer:         iss,
	})
	if err := reg.Start(ctx); err != nil {
		reg.Close()
		return nil, err
	}
	return reg, nil
}

// deviceAPI is the HTTPS API: the device API, with the service API behind
// the configured access policies.
func (s *server) deviceAPI() (*httpapi.Handler, error) {
	var policies []access.Policy
	for _, p := range s.cfg.AccessPolicies {
		ap := access.Policy{Name: p.Name, PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey}
		for _, r := range p.Rights {
			ap.Rights = append(ap.Rights, access.Right(r))
		}
		policies = append(policies, ap)
	}
	checker, err := access.New(policies, s.serviceHosts(), nil)
	if err != nil {
		return nil, err
	}
	manager := enrollment.New(enrollment.Options{Store: s.store, LinkedHubs: s.cfg.linkedHubs(), AllowHTTPWebhooks: s.cfg.Webhook.AllowHTTP})
	service := httpapi.NewService(httpapi.ServiceOptions{
		Manager:    manager,
		Authorizer: checker,
		Logger:     s.log,
		Faults:     s.faults,
		Throttle:   s.serviceThrottle,
		Events:     s.events,
		Issuance:   s.issuance,
	})
	hubPolicies := map[string][]access.Policy{}
	for _, h := range s.cfg.LinkedHubs {
		if !h.BuiltIn() {
			continue
		}
		for _, p := range h.AccessPolicies {
			ap := access.Policy{Name: p.Name, PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey}
			for _, r := range p.Rights {
				ap.Rights = append(ap.Rights, access.Right(r))
			}
			hubPolicies[h.HostName] = append(hubPolicies[h.HostName], ap)
		}
	}
	if s.console, err = s.newConsole(checker, manager, hubPolicies); err != nil {
		return nil, err
	}
	o := httpapi.Options{
		Registrar:   s.reg,
		Service:     service,
		Hub:         s.hub,
		HubPolicies: hubPolicies,
		Logger:      s.log,
		RetryAfter:  time.Duration(s.cfg.RetryAfterSeconds) * time.Second,
		Throttle:    s.throttle,
		Faults:      s.faults,
		// The built-in hubs' service API (the DPS service API's is the
		// service handler's).
		ServiceThrottle: s.serviceThrottle,
		Events:          s.events,
	}
	if s.routes != nil { // a nil *routing.Engine in the interface would not be nil
		o.Routes = s.routes
	}
	return httpapi.New(o), nil
}

// listen opens the HTTPS, MQTT and admin listeners, in that order, and
// leaves each in s for Close.
func (s *server) listen(tlsCfg *tls.Config) error {
	var err error
	s.httpsLn, err = net.Listen("tcp", s.cfg.Listen.HTTPS)
	if err != nil {
		return fmt.Errorf("listen.https %s: %w", s.cfg.Listen.HTTPS, err)
	}
	s.httpsLn = countListener(s.limitListener(s.httpsLn, "https"), "https", s.ops)
	if s.cfg.Listen.MQTT != "" {
		mqttLn, err := net.Listen("tcp", s.cfg.Listen.MQTT)
		if err != nil {
			return fmt.Errorf("listen.mqtt %s: %w", s.cfg.Listen.MQTT, err)
		}
		s.mqtt, err = mqttapi.Listen(s.cfg.Listen.MQTT, mqttapi.BrokerOptions{
			Listener:         countListener(s.limitListener(mqttLn, "mqtt"), "mqtt", s.ops),
			HandshakeTimeout: s.cfg.Limits.TLSHandshakeTimeout,
			ConnectTimeout:   s.cfg.Limits.HeaderTimeout,
			Adapter: &mqttapi.Adapter{Registrar: s.reg, RetryAfter: time.Duration(s.cfg.RetryAfterSeconds) * time.Second,
				Throttle: s.throttle, Faults: s.faults, Events: s.events},
			TLSConfig: tlsCfg,
			Logger:    s.log,
			Hub:       s.hub,
		})
		if err != nil {
			mqttLn.Close()
			return fmt.Errorf("listen.mqtt %s: %w", s.cfg.Listen.MQTT, err)
		}
	}
	if s.cfg.Listen.Admin != "" {
		s.adminLn, err = net.Listen("tcp", s.cfg.Listen.Admin)
		if err != nil {
			return fmt.Errorf("listen.admin %s: %w", s.cfg.Listen.Admin, err)
		}
	}
	return nil
}

// httpsHandler is what the HTTPS port serves: the device and service API
// and, with the MQTT broker, MQTT over WebSocket, which shares the HTTPS
// port as on Azure.
func (s *server) httpsHandler(device http.Handler) http.Handler {
	if s.console != nil {
		device = withConsole(s.console, device)
	}
	if s.mqtt == nil {
		return device
	}
	ws := s.mqtt.WebSocket()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == mqttapi.WebSocketPath {
			ws.ServeHTTP(w, r)
			return
		}
		device.ServeHTTP(w, r)
	})
}

// serveHTTPS serves handler over TLS on ln; Close shuts the server down.
// headerTimeout bounds the request headers and, as net/http bounds the TLS
// handshake by its smallest timeout, the handshake.
func serveHTTPS(ln net.Listener, handler http.Handler, tlsCfg *tls.Config, headerTimeout time.Duration, log *slog.Logger) *http.Server {
	srv := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("https listener stopped", "err", err)
		}
	}()
	return srv
}

// adminHandler serves health, readiness, metrics and profiling.
func (s *server) adminHandler(metrics *prom.Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if !s.ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		// Answering reads is not enough: a full disk, a read-only file
		// or a standby refuses every registration.
		if err := s.store.Ping(ctx); err != nil {
			s.log.Warn("not ready: storage does not answer", "err", err)
			http.Error(w, "storage unavailable", http.StatusServiceUnavailable)
			return
		}
		if err := s.store.CheckWrite(ctx, s.cfg.NodeID); err != nil {
			s.log.Warn("not ready: storage does not take writes", "err", err)
			http.Error(w, "storage does not take writes", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
		s.hubs.report(ctx, w) // a remote hub that is down is reported, not fatal
	})
	mux.Handle("GET /metrics", metrics.Handler())
	// Profiling for operators; the admin listener is loopback by default.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// serveAdmin serves handler on ln; Close shuts the server down.
func serveAdmin(ln net.Listener, handler http.Handler, log *slog.Logger) *http.Server {
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", "err", err)
		}
	}()
	return srv
}

// defaultHosts are the names the generated server certificate covers.
// The machine's host name only when serviceHostName is unset: with it set,
// nodes that share a dataDir (compose's volume) and differ only in host
// name ask for the same names, so none rewrites the others' certificate.
func (s *server) defaultHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if s.cfg.ServiceHostName != "" {
		hosts = append(hosts, s.cfg.ServiceHostName)
	} else if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	// Devices connect to a built-in hub by its name: the certificate must
	// cover it (a DNS name or an IP address).
	for _, h := range s.cfg.builtInHubs() {
		if !slices.ContainsFunc(hosts, func(x string) bool { return strings.EqualFold(x, h) }) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// serviceHosts are the host names a service API token may name: the
// configured serviceHostName, or else localhost, 127.0.0.1 and the names in
// the server certificate.
func (s *server) serviceHosts() []string {
	if s.cfg.ServiceHostName != "" {
		return []string{s.cfg.ServiceHostName}
	}
	hosts := []string{"localhost", "127.0.0.1"}
	if s.cert != nil {
		hosts = append(hosts, s.cert.DNSNames...)
		for _, ip := range s.cert.IPAddresses {
			hosts = append(hosts, ip.String())
		}
	}
	return hosts
}

func (s *server) tlsConfig() (*tls.Config, error) {
	certFile, keyFile := s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile
	var renew func(time.Time) error
	if certFile == "" {
		dir := filepath.Join(s.cfg.DataDir, "tls")
		files, err := pki.Ensure(dir, s.defaultHosts(), time.Now())
		if err != nil {
			return nil, fmt.Errorf("tls: generate certificates in %s: %w", s.cfg.DataDir, err)
		}
		certFile, keyFile, s.caFile = files.ServerCert, files.ServerKey, files.CACert
		renew = func(now time.Time) error { _, err := pki.Ensure(dir, s.defaultHosts(), now); return err }
	}
	certs, err := newCertSource(certFile, keyFile, s.log, time.Now)
	if err != nil {
		return nil, err
	}
	certs.renew = renew
	s.cert = certs.Leaf()
	s.stopCerts = goUntilClose(certs.run)
	return &tls.Config{
		GetCertificate: certs.GetCertificate, // reloaded when the files change (tlsreload.go)
		MinVersion:     tls.VersionTLS12,
		// Request, but do not require, a client certificate: X.509 devices
		// present one, symmetric-key devices do not. Chains are verified
		// against enrollments by the application.
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{"h2", "http/1.1"},
	}, nil
}

// webhookHTTPClient trusts the system store (which honours SSL_CERT_FILE
// and SSL_CERT_DIR) plus webhook.caFile, and presents the optional client
// certificate.
func webhookHTTPClient(c WebhookConfig) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("webhook.caFile: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("webhook.caFile: %s holds no PEM certificate", c.CAFile)
		}
	}
	tlsCfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if c.ClientCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.ClientCertFile, c.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("webhook.clientCertFile/clientKeyFile: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     tlsCfg,
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		},
		// Redirects are not followed: the answer must come from the URL configured.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

func newKey() string {
	b := make([]byte, 64)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// newHubKey is a key as IoT Hub generates them: 32 random bytes.
func newHubKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// serviceHost is the host name in service connection strings.
func (s *server) serviceHost() string {
	if s.cfg.ServiceHostName != "" {
		return s.cfg.ServiceHostName
	}
	return "localhost"
}

// Close stops the listeners, then the workers, then the store. Calls
// after the first return nil.
func (s *server) Close(ctx context.Context) error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	if s.hub != nil {
		s.hub.EndEventWaits() // long polls of the event log answer now
	}
	if s.console != nil {
		s.console.Close() // and the console's live streams end
	}
	if s.events != nil {
		s.events.EndFollows() // so do the registration event streams
	}
	if s.https != nil {
		errs = append(errs, s.https.Shutdown(ctx))
	} else if s.httpsLn != nil {
		s.httpsLn.Close()
	}
	if s.mqtt != nil {
		errs = append(errs, s.mqtt.Close())
	}
	if s.admin != nil {
		errs = append(errs, s.admin.Shutdown(ctx))
	} else if s.adminLn != nil {
		s.adminLn.Close()
	}
	// The device transports are closed: what the throttles' log gates
	// still hold is logged (and their timers stop).
	s.throttle.Close()
	s.serviceThrottle.Close()
	if s.stopRetention != nil {
		s.stopRetention()
	}
	if s.stopCerts != nil {
		s.stopCerts()
	}
	if s.stopRouting != nil {
		errs = append(errs, s.stopRouting())
	}
	if s.reg != nil {
		errs = append(errs, s.reg.Close())
	}
	if s.events != nil {
		s.events.Close() // what the workers recorded last is written
	}
	if s.stopBus != nil {
		// Other nodes find this node's devices offline at once.
		if err := s.hub.Leave(ctx); err != nil {
			s.log.Warn("hub cluster: forgetting this node's connections failed", "error", err)
		}
		s.stopBus()
		<-s.busDone
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	return errors.Join(errs...)
}
