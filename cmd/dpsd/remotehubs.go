package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/hub/builtin"
	"github.com/opendps/dps/internal/hub/remote"
)

// A linked hub with a connectionString is a remote hub (an Azure IoT Hub,
// or another dps's built-in hub): dpsd provisions devices there through
// the IoT Hub service REST API (internal/hub/remote). The connection
// string is a secret: it is validated at start and never logged or
// printed.

// validateRemoteHub checks a remote hub's settings: the connection string
// parses and names the hub, the CA file is readable.
func validateRemoteHub(bad func(key, format string, args ...any), key string, h HubConfig) {
	if h.BuiltIn() {
		if h.CAFile != "" || h.Timeout != 0 || h.Endpoint != "" {
			bad(key, "caFile, timeout and endpoint are a remote hub's settings (one with a connectionString)")
		}
		return
	}
	cs, err := remote.ParseConnectionString(h.ConnectionString)
	if err != nil {
		bad(key+".connectionString", "%v", err) // the parser's errors never contain the key
		return
	}
	if !strings.EqualFold(cs.HostName, h.HostName) {
		bad(key+".connectionString", "its HostName %q is not the hub's hostName %q", cs.HostName, h.HostName)
	}
	if h.Timeout < 0 || h.Timeout > 5*time.Minute {
		bad(key+".timeout", "%s: must be between 0 (30 s) and 5m", h.Timeout)
	}
	if h.CAFile != "" {
		if _, err := readCAs(h.CAFile); err != nil {
			bad(key+".caFile", "%v", err)
		}
	}
}

// validateHubRetryBudget checks hubRetryBudget: how long a registration
// retries a hub's transient failures (429, 5xx, timeouts, a hub that is
// down) before it fails with 503201.
func validateHubRetryBudget(bad func(key, format string, args ...any), d time.Duration) {
	if d != 0 && (d < time.Second || d > 24*time.Hour) {
		bad("hubRetryBudget", "%s: must be 0 (10m) or between 1s and 24h", d)
	}
}

func readCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// hubs is the hub connector of dpsd: built-in hubs through the built-in
// connector (their records written with the operations), remote hubs
// through their remote connectors.
type hubs struct {
	builtin *builtin.Connector
	remote  map[string]*remote.Hub // by dps.FoldID(host name)

	mu     sync.Mutex
	probed map[string]probe // readiness, by host name
}

type probe struct {
	at  time.Time
	err error
}

// newHubs builds the connectors of cfg's hubs (validated).
func newHubs(cfg Config, st builtin.Store) (*hubs, error) {
	h := &hubs{builtin: &builtin.Connector{Store: st}, remote: map[string]*remote.Hub{}, probed: map[string]probe{}}
	for i, hc := range cfg.LinkedHubs {
		if hc.BuiltIn() {
			continue
		}
		cs, err := remote.ParseConnectionString(hc.ConnectionString)
		if err != nil {
			return nil, fmt.Errorf("linkedHubs[%d].connectionString: %w", i, err)
		}
		o := remote.Options{ConnectionString: cs, Endpoint: hc.Endpoint, Timeout: hc.Timeout}
		if hc.CAFile != "" {
			if o.RootCAs, err = readCAs(hc.CAFile); err != nil {
				return nil, fmt.Errorf("linkedHubs[%d].caFile: %w", i, err)
			}
		}
		r, err := remote.New(o)
		if err != nil {
			return nil, err
		}
		h.remote[dps.FoldID(hc.HostName)] = r
	}
	return h, nil
}

// records reports whether hub is built in (registration.Options.RecordsDevices).
func (h *hubs) records(hub string) bool { _, ok := h.remote[dps.FoldID(hub)]; return !ok }

func (h *hubs) Provision(ctx context.Context, d dps.HubDevice) error {
	if r, ok := h.remote[dps.FoldID(d.Hub)]; ok {
		return r.Provision(ctx, d)
	}
	return h.builtin.Provision(ctx, d)
}

func (h *hubs) Deprovision(ctx context.Context, hub, deviceID string) error {
	if r, ok := h.remote[dps.FoldID(hub)]; ok {
		return r.Deprovision(ctx, hub, deviceID)
	}
	return h.builtin.Deprovision(ctx, hub, deviceID)
}

func (h *hubs) Twin(ctx context.Context, hub, deviceID string) (json.RawMessage, error) {
	if r, ok := h.remote[dps.FoldID(hub)]; ok {
		return r.Twin(ctx, hub, deviceID)
	}
	return h.builtin.Twin(ctx, hub, deviceID)
}

// Record is the built-in connector's (registration.DeviceRecorder): the
// engine asks only for built-in hubs' records.
func (h *hubs) Record(ctx context.Context, d dps.HubDevice) (dps.HubDevice, error) {
	return h.builtin.Record(ctx, d)
}

// Removal and Remove are registration.DeviceRemover and DeviceDeleter:
// the identity a device leaves is read (its ETag) before the move
// commits, and deleted only if unchanged since — a built-in hub's record
// by the store (with the operation, or RemoveHubDevice), a remote hub's
// identity with If-Match.
func (h *hubs) Removal(ctx context.Context, hub, deviceID string) (*dps.HubDevice, error) {
	if r, ok := h.remote[dps.FoldID(hub)]; ok {
		return r.Removal(ctx, hub, deviceID)
	}
	return h.builtin.Removal(ctx, hub, deviceID)
}

func (h *hubs) Remove(ctx context.Context, d dps.HubDevice) error {
	if r, ok := h.remote[dps.FoldID(d.Hub)]; ok {
		return r.Remove(ctx, d)
	}
	return h.builtin.Remove(ctx, d)
}

// probeEvery is how long a remote hub's readiness probe is trusted;
// probeTimeout bounds one probe.
const (
	probeEvery   = 15 * time.Second
	probeTimeout = 2 * time.Second
)

// report writes the state of the remote hubs for /readyz: a hub that does
// not answer is reported, the instance stays ready (its other hubs work,
// and registrations to that hub are retried).
func (h *hubs) report(ctx context.Context, w io.Writer) {
	for _, r := range h.remote {
		name := r.HostName()
		h.mu.Lock()
		p, ok := h.probed[name]
		h.mu.Unlock()
		if !ok || time.Since(p.at) > probeEvery {
			// A short probe of its own: a hub that hangs must not hold
			// /readyz (probes time out in a few seconds), and a caller that
			// gives up must not record the hub as down.
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
			p = probe{at: time.Now(), err: r.Probe(pctx)}
			cancel()
			h.mu.Lock()
			h.probed[name] = p
			h.mu.Unlock()
		}
		if p.err != nil {
			fmt.Fprintf(w, "remote hub %s: down: %v\n", name, p.err)
		} else {
			fmt.Fprintf(w, "remote hub %s: ok\n", name)
		}
	}
}
