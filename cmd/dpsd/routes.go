package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/opendps/dps/internal/route"
	"github.com/opendps/dps/internal/route/kafka"
	"github.com/opendps/dps/internal/route/mqtt"
	"github.com/opendps/dps/internal/route/nats"
	"github.com/opendps/dps/internal/route/webhook"
	"github.com/opendps/dps/internal/routing"
)

// EndpointConfig is one endpoint of a built-in hub's message routes
// (linkedHubs[].endpoints). Which keys apply depends on Type: kafka
// (brokers, topic), nats (url, subject, stream), mqtt (url, topic,
// username, password, clientId), webhook (url, secret); caFile, certFile
// and keyFile are the TLS options of each.
type EndpointConfig struct {
	Name     string   `yaml:"name"`
	Type     string   `yaml:"type"`
	URL      string   `yaml:"url"`
	Brokers  []string `yaml:"brokers"`
	Topic    string   `yaml:"topic"`
	Subject  string   `yaml:"subject"`
	Stream   string   `yaml:"stream"`
	Username string   `yaml:"username"`
	Password string   `yaml:"password"`
	ClientID string   `yaml:"clientId"`
	Secret   string   `yaml:"secret"`
	CAFile   string   `yaml:"caFile"`
	CertFile string   `yaml:"certFile"`
	KeyFile  string   `yaml:"keyFile"`
	// TLS turns TLS on for kafka (on by itself when caFile or certFile is
	// set); nats and mqtt take it from the URL's scheme (tls://, mqtts://).
	TLS bool `yaml:"tls"`
	// SASLMechanism is kafka's SASL mechanism with username and
	// password: PLAIN (Azure Event Hubs: username $ConnectionString),
	// SCRAM-SHA-256 or SCRAM-SHA-512; empty: none.
	SASLMechanism string `yaml:"saslMechanism"`
	// Token and Creds authenticate to nats (a token, or a .creds file).
	Token string `yaml:"token"`
	Creds string `yaml:"creds"`
	// Properties is how mqtt carries the message properties: "bag" (an
	// IoT Hub property bag as the topic's last level, the default) or
	// "none".
	Properties string `yaml:"properties"`
}

// RouteConfig is one message route of a built-in hub
// (linkedHubs[].routes).
type RouteConfig struct {
	Name      string `yaml:"name"`
	Source    string `yaml:"source"`    // telemetry (default), deviceLifecycle, twinChange, deviceConnectionState
	Condition string `yaml:"condition"` // default "true"
	Endpoint  string `yaml:"endpoint"`
	Enabled   *bool  `yaml:"enabled"` // default true
}

// RoutingConfig holds the settings every route shares (routing:).
type RoutingConfig struct {
	BatchSize           int           `yaml:"batchSize"`           // default 100
	Linger              time.Duration `yaml:"linger"`              // default 20ms
	Poll                time.Duration `yaml:"poll"`                // default 250ms
	Lease               time.Duration `yaml:"lease"`               // default 30s
	RetryBudget         time.Duration `yaml:"retryBudget"`         // default 1h
	MinBackoff          time.Duration `yaml:"minBackoff"`          // default 1s
	MaxBackoff          time.Duration `yaml:"maxBackoff"`          // default 1m
	MaxLag              int64         `yaml:"maxLag"`              // default 1000000
	DeadLetterRetention time.Duration `yaml:"deadLetterRetention"` // default 168h
	MaxDeadLetters      int           `yaml:"maxDeadLetters"`      // per route, oldest deleted past it; 0: default 10000
}

var endpointTypes = []string{"kafka", "nats", "mqtt", "webhook"}

// validateRoutes checks the endpoints and routes of the built-in hubs.
func (c Config) validateRoutes(bad func(key, format string, args ...any)) {
	for i, h := range c.LinkedHubs {
		key := fmt.Sprintf("linkedHubs[%d]", i)
		if !h.BuiltIn() && (len(h.Endpoints) > 0 || len(h.Routes) > 0) {
			bad(key, "only a built-in hub (no connectionString) has endpoints and routes")
			continue
		}
		eps := map[string]string{}
		for j, e := range h.Endpoints {
			k := fmt.Sprintf("%s.endpoints[%d]", key, j)
			if e.Name == "" {
				bad(k+".name", "must not be empty")
			}
			if _, dup := eps[strings.ToLower(e.Name)]; dup {
				bad(k+".name", "%q is defined twice", e.Name)
			}
			eps[strings.ToLower(e.Name)] = e.Type
			switch e.Type {
			case "webhook":
				if !strings.HasPrefix(e.URL, "https://") && !strings.HasPrefix(e.URL, "http://") {
					bad(k+".url", "%q: must be an http(s) URL", e.URL)
				}
			case "kafka":
				if len(e.Brokers) == 0 || e.Topic == "" {
					bad(k, "a kafka endpoint needs brokers and a topic")
				}
			case "nats":
				if e.URL == "" || e.Subject == "" {
					bad(k, "a nats endpoint needs a url and a subject")
				}
			case "mqtt":
				if e.URL == "" || e.Topic == "" {
					bad(k, "an mqtt endpoint needs a url and a topic")
				}
			default:
				bad(k+".type", "%q: must be one of %s", e.Type, strings.Join(endpointTypes, ", "))
			}
			if (e.CertFile == "") != (e.KeyFile == "") {
				bad(k, "certFile and keyFile must be set together")
			}
		}
		names := map[string]bool{}
		for j, r := range h.Routes {
			k := fmt.Sprintf("%s.routes[%d]", key, j)
			if r.Name == "" {
				bad(k+".name", "must not be empty")
			}
			if names[strings.ToLower(r.Name)] {
				bad(k+".name", "%q is defined twice", r.Name)
			}
			names[strings.ToLower(r.Name)] = true
			if _, err := routing.ParseSource(r.Source); err != nil {
				bad(k+".source", "%v", err)
			}
			if _, err := routing.Compile(r.Condition); err != nil {
				bad(k+".condition", "%v", err)
			}
			if _, ok := eps[strings.ToLower(r.Endpoint)]; !ok {
				bad(k+".endpoint", "%q: no endpoint of this hub has that name", r.Endpoint)
			}
		}
	}
	rc := c.Routing
	if rc.BatchSize < 0 || rc.BatchSize > 10000 {
		bad("routing.batchSize", "%d: must be between 1 and 10000", rc.BatchSize)
	}
	if rc.Lease != 0 && (rc.Lease < 3*time.Second || rc.Lease > 10*time.Minute) {
		bad("routing.lease", "%s: must be between 3s and 10m", rc.Lease)
	}
	if rc.RetryBudget < 0 || rc.MinBackoff < 0 || rc.MaxBackoff < 0 || rc.MaxLag < 0 || rc.Linger < 0 || rc.Poll < 0 {
		bad("routing", "durations and counts must not be negative")
	}
	if rc.MaxDeadLetters < 0 {
		bad("routing.maxDeadLetters", "%d: must not be negative (0 or unset: the default, %d)", rc.MaxDeadLetters, routing.DefaultMaxDeadLetters)
	}
	if rc.MinBackoff > 0 && rc.MaxBackoff > 0 && rc.MinBackoff > rc.MaxBackoff {
		bad("routing.minBackoff", "must not exceed routing.maxBackoff")
	}
	if rc.Poll != 0 && rc.Poll < 10*time.Millisecond {
		bad("routing.poll", "%s: must be at least 10ms", rc.Poll)
	}
	if rc.DeadLetterRetention != 0 && rc.DeadLetterRetention < time.Minute {
		bad("routing.deadLetterRetention", "%s: must be at least 1m", rc.DeadLetterRetention)
	}
	lease := rc.Lease
	if lease == 0 {
		lease = routing.DefaultLease
	}
	if rc.Linger*3 >= lease {
		bad("routing.linger", "%s: must be under a third of routing.lease (%s), or the lease ends while a batch lingers", rc.Linger, lease)
	}
}

// applyRouteEnv applies the endpoints' secret overrides:
// DPSD_LINKEDHUBS_<N>_ENDPOINTS_<NAME>_SECRET and _PASSWORD (NAME
// upper-cased, '-' as '_'). ${DPSD_…} references in the file work too.
func applyRouteEnv(c *Config, getenv func(string) string) {
	for i := range c.LinkedHubs {
		for j := range c.LinkedHubs[i].Endpoints {
			e := &c.LinkedHubs[i].Endpoints[j]
			n := fmt.Sprintf("DPSD_LINKEDHUBS_%d_ENDPOINTS_%s_", i, strings.ToUpper(strings.ReplaceAll(e.Name, "-", "_")))
			if v := getenv(n + "SECRET"); v != "" {
				e.Secret = v
			}
			if v := getenv(n + "PASSWORD"); v != "" {
				e.Password = v
			}
		}
	}
}

// newEndpoint makes the client of an endpoint.
func newEndpoint(ctx context.Context, e EndpointConfig, log *slog.Logger) (routing.Endpoint, error) {
	wrap := func(ep routing.Endpoint, err error) (routing.Endpoint, error) {
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: %w", e.Name, err)
		}
		return ep, nil
	}
	files := route.TLSFiles{CAFile: e.CAFile, CertFile: e.CertFile, KeyFile: e.KeyFile}
	tlsFor := func(on bool) (*tls.Config, error) {
		if !on && e.CAFile == "" && e.CertFile == "" {
			return nil, nil
		}
		return files.Config()
	}
	log = log.With("endpoint", e.Name, "type", e.Type)
	switch e.Type {
	case "webhook":
		tlsCfg, err := webhook.TLSConfig(e.CAFile, e.CertFile, e.KeyFile)
		if err != nil {
			return wrap(nil, err)
		}
		return wrap(webhook.New(webhook.Options{URL: e.URL, Secret: []byte(e.Secret), TLS: tlsCfg}))
	case "kafka":
		tlsCfg, err := tlsFor(e.TLS)
		if err != nil {
			return wrap(nil, err)
		}
		var sasl kafka.SASL
		if e.SASLMechanism != "" {
			sasl = kafka.SASL{Mechanism: e.SASLMechanism, User: e.Username, Password: e.Password}
		}
		return wrap(kafka.New(kafka.Options{Brokers: e.Brokers, Topic: e.Topic, TLS: tlsCfg, SASL: sasl, ClientID: e.ClientID, Logger: log}))
	case "nats":
		tlsCfg, err := tlsFor(strings.HasPrefix(e.URL, "tls://"))
		if err != nil {
			return wrap(nil, err)
		}
		return wrap(nats.New(ctx, nats.Options{URL: e.URL, Subject: e.Subject, Stream: e.Stream, TLS: tlsCfg, Creds: e.Creds, Token: e.Token,
			User: e.Username, Password: e.Password, Name: e.ClientID, Logger: log}))
	case "mqtt":
		tlsCfg, err := tlsFor(strings.HasPrefix(e.URL, "mqtts://") || strings.HasPrefix(e.URL, "ssl://") || strings.HasPrefix(e.URL, "tls://"))
		if err != nil {
			return wrap(nil, err)
		}
		return wrap(mqtt.New(mqtt.Options{URL: e.URL, Topic: e.Topic, Properties: e.Properties, TLS: tlsCfg, Username: e.Username,
			Password: e.Password, ClientID: e.ClientID, Logger: log}))
	}
	return nil, fmt.Errorf("endpoint %s: endpoint type %q is not one of %s", e.Name, e.Type, strings.Join(endpointTypes, ", "))
}

// startRouting makes the endpoints and the routing engine of the built-in
// hubs; nil when no hub has routes. The caller runs the engine and closes
// the endpoints.
func (s *server) newRouting(ctx context.Context, st routing.Store, obs routing.Observer) (*routing.Engine, []routing.Endpoint, error) {
	var routes []routing.Route
	var all []routing.Endpoint
	fail := func(err error) (*routing.Engine, []routing.Endpoint, error) {
		for _, ep := range all {
			ep.Close()
		}
		return nil, nil, err
	}
	for _, h := range s.cfg.LinkedHubs {
		if !h.BuiltIn() || len(h.Routes) == 0 {
			continue
		}
		eps := map[string]routing.Endpoint{}
		for _, e := range h.Endpoints {
			used := false
			for _, r := range h.Routes {
				used = used || strings.EqualFold(r.Endpoint, e.Name)
			}
			if !used {
				continue
			}
			ep, err := newEndpoint(ctx, e, s.log)
			if err != nil {
				return fail(fmt.Errorf("linkedHubs %s: %w", h.HostName, err))
			}
			eps[strings.ToLower(e.Name)] = ep
			all = append(all, ep)
		}
		for _, r := range h.Routes {
			src, _ := routing.ParseSource(r.Source)
			cond, err := routing.Compile(r.Condition)
			if err != nil {
				return fail(err)
			}
			q := r.Condition
			if q == "" {
				q = "true"
			}
			routes = append(routes, routing.Route{Hub: h.HostName, Name: r.Name, Source: src, Query: q, Cond: cond, Endpoint: r.Endpoint,
				Deliver: eps[strings.ToLower(r.Endpoint)], Enabled: r.Enabled == nil || *r.Enabled})
		}
	}
	if len(routes) == 0 {
		return nil, nil, nil
	}
	rc := s.cfg.Routing
	e, err := routing.New(routing.Options{Store: st, Routes: routes, Node: s.cfg.NodeID, BatchSize: rc.BatchSize, Linger: rc.Linger,
		Poll: rc.Poll, Lease: rc.Lease, RetryBudget: rc.RetryBudget, MinBackoff: rc.MinBackoff, MaxBackoff: rc.MaxBackoff,
		MaxLag: rc.MaxLag, DeadLetterRetention: rc.DeadLetterRetention, MaxDeadLetters: rc.MaxDeadLetters, Observer: obs, Logger: s.log})
	if err != nil {
		return fail(err)
	}
	return e, all, nil
}

// startRouting runs the engine until Close.
func (s *server) startRouting(e *routing.Engine, eps []routing.Endpoint) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(ctx)
	}()
	s.stopRouting = func() error {
		cancel()
		<-done
		var errs []error
		for _, ep := range eps {
			errs = append(errs, ep.Close())
		}
		return errors.Join(errs...)
	}
}
