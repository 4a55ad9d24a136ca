package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/manifest"
)

// ManifestConfig applies manifests (declarative enrollments, the files
// dpsctl apply takes) at start.
type ManifestConfig struct {
	// Files are manifests (YAML, JSON, or an export's JSON lines), applied
	// in-process on every start once the store is open and before the
	// listeners are: what they declare is created, or updated when it
	// differs, and nothing else changes. ${DPSD_…} and ${DPS_…}
	// references in their values are read from the environment (not in
	// an export's: its values are data).
	Files []string `yaml:"files"`
	// Prune also deletes what the store holds of the kinds the files
	// manage that they do not name (default false: never). Every node
	// applies its own files at its start: during a rolling change of
	// them, a node with the older files deletes what the newer added.
	Prune bool `yaml:"prune"`
}

func (m ManifestConfig) validate(bad func(key, format string, args ...any)) {
	for i, f := range m.Files {
		if f == "" {
			bad(fmt.Sprintf("manifest.files[%d]", i), "must not be empty")
		}
	}
	if m.Prune && len(m.Files) == 0 {
		bad("manifest.prune", "needs manifest.files")
	}
}

// load reads and checks every file (start and --check-config).
func (m ManifestConfig) load(getenv func(string) string) (*manifest.Manifest, error) {
	var ms []*manifest.Manifest
	var errs []error
	for i, path := range m.Files {
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("manifest.files[%d]: %w", i, err))
			continue
		}
		mf, err := manifest.Parse(path, b, getenv)
		if err != nil {
			errs = append(errs, fmt.Errorf("manifest.files[%d]: %w", i, err))
			continue
		}
		ms = append(ms, mf)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	merged, err := manifest.Merge(ms...)
	if err != nil {
		return nil, fmt.Errorf("manifest.files: %w", err)
	}
	return merged, nil
}

// checkHubs reports the hub devices' hubs that are not built-in hubs.
func (c Config) checkManifestHubs(m *manifest.Manifest) error {
	var errs []error
	for _, h := range m.Hubs() {
		if !slices.ContainsFunc(c.builtInHubs(), func(b string) bool { return strings.EqualFold(b, h) }) {
			errs = append(errs, fmt.Errorf("manifest.files: hubDevices: %s is not a built-in hub of this instance (linkedHubs without connectionString)", h))
		}
	}
	return errors.Join(errs...)
}

// applyManifests applies the configured manifests through the service
// API's handler, in-process: the same validation, ETags and answers as a
// dpsctl apply. An object that fails stops the start.
func (s *server) applyManifests(ctx context.Context, api http.Handler) error {
	if len(s.cfg.Manifest.Files) == 0 {
		return nil
	}
	getenv := s.cfg.getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	m, err := s.cfg.Manifest.load(getenv)
	if err != nil {
		return err
	}
	if err := s.cfg.checkManifestHubs(m); err != nil {
		return err
	}
	t, err := s.inProcessTarget(api, m)
	if err != nil {
		return err
	}
	plan, err := manifest.NewPlan(ctx, m, t, manifest.Options{Prune: s.cfg.Manifest.Prune})
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	res := plan.Apply(ctx, t, func(st manifest.Step, err error) {
		if err != nil {
			s.log.Error("manifest: "+string(st.Action)+" failed", "object", st.Item.Name(), "err", err)
			return
		}
		attrs := []any{"object", st.Item.Name()}
		if len(st.Changes) > 0 {
			paths := make([]string, len(st.Changes))
			for i, c := range st.Changes {
				paths[i] = c.Path // never the values: they may be keys
			}
			attrs = append(attrs, "changed", strings.Join(paths, ","))
		}
		s.log.Info("manifest: "+string(st.Action)+"d", attrs...)
		for _, w := range st.Warnings {
			s.log.Warn("manifest: "+w, "object", st.Item.Name())
		}
	})
	s.log.Info("manifest applied", "files", strings.Join(s.cfg.Manifest.Files, ","), "created", res.Created, "updated", res.Updated,
		"deleted", res.Deleted, "unchanged", res.Unchanged, "failed", len(res.Failures))
	if n := len(res.Failures); n > 0 {
		return fmt.Errorf("manifest: %d object(s) failed, the first: %s", n, res.Failures[0])
	}
	return nil
}

// inProcessTarget is a manifest target that calls api in-process, signed
// with a configured (or generated) policy that has the rights apply
// needs, and with each built-in hub's that the manifest names.
func (s *server) inProcessTarget(api http.Handler, m *manifest.Manifest) (*manifest.Target, error) {
	hc := &http.Client{Transport: inProcess{api}}
	need := []string{"EnrollmentRead", "EnrollmentWrite", "ServiceConfig"}
	if s.cfg.Manifest.Prune {
		need = append(need, "RegistrationStatusRead") // which hub devices registrations assigned
	}
	p, ok := policyWith(s.cfg.AccessPolicies, need)
	if !ok {
		return nil, fmt.Errorf("manifest: no access policy has the rights %s", strings.Join(need, ", "))
	}
	svc, err := signedClient(s.serviceHost(), p, hc)
	if err != nil {
		return nil, err
	}
	t := &manifest.Target{Service: svc, Hubs: map[string]*client.Client{}}
	for _, hub := range m.Hubs() {
		for _, h := range s.cfg.LinkedHubs {
			if !h.BuiltIn() || !strings.EqualFold(h.HostName, hub) {
				continue
			}
			p, ok := policyWith(h.AccessPolicies, []string{"RegistryRead", "RegistryWrite", "ServiceConnect"})
			if !ok {
				return nil, fmt.Errorf("manifest: no access policy of hub %s has the rights RegistryRead, RegistryWrite and ServiceConnect", h.HostName)
			}
			if t.Hubs[h.HostName], err = signedClient(h.HostName, p, hc); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

func policyWith(ps []PolicyConfig, rights []string) (PolicyConfig, bool) {
	for _, p := range ps {
		if !slices.ContainsFunc(rights, func(r string) bool { return !slices.Contains(p.Rights, r) }) {
			return p, true
		}
	}
	return PolicyConfig{}, false
}

func signedClient(host string, p PolicyConfig, hc *http.Client) (*client.Client, error) {
	key, err := base64.StdEncoding.DecodeString(p.PrimaryKey)
	if err != nil {
		return nil, fmt.Errorf("access policy %s: the primary key is not base64", p.Name)
	}
	return &client.Client{Endpoint: "https://" + host, HostName: host, KeyName: p.Name, Key: key, HTTP: hc}, nil
}

// inProcess is an http.RoundTripper that serves requests with a handler
// in this process: no listener, no TLS.
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	if r.Body == nil {
		r.Body = http.NoBody
	}
	if r.Host == "" {
		r.Host = req.URL.Host
	}
	r.RequestURI = req.URL.RequestURI()
	r.RemoteAddr = "127.0.0.1:0" // this process
	w := &recorder{header: http.Header{}}
	t.h.ServeHTTP(w, r)
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return &http.Response{
		Status: strconv.Itoa(w.code) + " " + http.StatusText(w.code), StatusCode: w.code,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: w.header, Body: io.NopCloser(bytes.NewReader(w.body.Bytes())), ContentLength: int64(w.body.Len()), Request: req,
	}, nil
}

// recorder is the http.ResponseWriter of an in-process request.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *recorder) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}
