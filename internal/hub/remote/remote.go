// Package remote is the hub connector of remote IoT hubs (Azure IoT Hubs,
// or another dps's built-in hub): it creates device identities and their
// initial twins through the IoT Hub service REST API, as Azure DPS does,
// with a shared access policy's connection string (RegistryWrite and
// ServiceConnect).
//
// One Hub talks to one hub. Provision creates the identity
// (PUT /devices/{id} without If-Match) or, when it exists (409), reads it
// and writes it over (If-Match "*") keeping what DPS does not own (status,
// status reason, scopes), then writes the initial twin as the
// provisioning's dps.TwinWrite says (PATCH /twins/{id} for a new device,
// PUT to replace the tags and desired properties of an existing one).
// Deprovision deletes the identity (404 is not an error); Removal reads
// its ETag and Remove deletes it only while it has that ETag (412: it
// changed, and it stays); Twin reads the twin back in DPS's initial-twin
// form.
//
// Failures: 429, 5xx, a timeout or a network error are transient (a plain
// error, which the registration engine retries with backoff; a 429's or
// 503's Retry-After is offered through the error's RetryAfter method);
// 400, 401, 403, 404 (when creating) and 412 are a *dps.HubFailure naming
// the hub and the cause, never the key.
package remote

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/sas"
)

// APIVersion is the service API version the connector speaks.
const APIVersion = "2021-04-12"

// Defaults of Options.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultMaxInFlight = 16
	// tokenLife is how long a service SAS token is valid; it is renewed
	// when less than tokenRenew of it is left.
	tokenLife  = time.Hour
	tokenRenew = 10 * time.Minute
)

// ConnectionString is a parsed shared access policy connection string.
type ConnectionString struct {
	HostName string
	KeyName  string
	Key      []byte
}

// String hides the key: a connection string is never printed.
func (c ConnectionString) String() string {
	return "HostName=" + c.HostName + ";SharedAccessKeyName=" + c.KeyName + ";SharedAccessKey=…"
}

// ParseConnectionString parses
// HostName=…;SharedAccessKeyName=…;SharedAccessKey=… (any order, keys
// case-insensitive). Its errors never contain the key.
func ParseConnectionString(s string) (ConnectionString, error) {
	var c ConnectionString
	var key string
	for part := range strings.SplitSeq(strings.TrimSpace(s), ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return c, errors.New("connection string: a part is not name=value")
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "hostname":
			c.HostName = strings.TrimSpace(v)
		case "sharedaccesskeyname":
			c.KeyName = strings.TrimSpace(v)
		case "sharedaccesskey":
			key = strings.TrimSpace(v)
		case "deviceid", "moduleid":
			return c, errors.New("connection string: a device connection string, not a shared access policy's")
		}
	}
	switch {
	case c.HostName == "":
		return c, errors.New("connection string: no HostName")
	case c.KeyName == "":
		return c, errors.New("connection string: no SharedAccessKeyName (the policy, e.g. iothubowner)")
	case key == "":
		return c, errors.New("connection string: no SharedAccessKey")
	}
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil || len(b) == 0 {
		return c, errors.New("connection string: SharedAccessKey is not base64")
	}
	c.Key = b
	return c, nil
}

// Options configure a Hub.
type Options struct {
	// ConnectionString is the hub's shared access policy connection string.
	ConnectionString ConnectionString
	// Endpoint, when set, is the host:port (or https URL) requests go to
	// instead of HostName on 443; the TLS server name and the token's
	// resource stay HostName.
	Endpoint string
	// RootCAs, when not nil, are the CAs the hub's certificate must chain
	// to (a dps hub with a private CA); nil: the system's.
	RootCAs *x509.CertPool
	// Timeout bounds each request, its wait for a turn (MaxInFlight)
	// included (default DefaultTimeout).
	Timeout time.Duration
	// MaxInFlight bounds the requests in flight to this hub (default
	// DefaultMaxInFlight); more wait for a turn, within their context and
	// their Timeout.
	MaxInFlight int
	// Transport, when not nil, replaces the HTTP transport (tests).
	Transport http.RoundTripper
	// Now is the clock of the tokens (default time.Now).
	Now func() time.Time
}

// Hub is the connector to one remote hub: a registration.HubConnector and
// registration.TwinReader for the hub it was made for. Safe for
// concurrent use.
type Hub struct {
	cs      ConnectionString
	base    string // https://endpoint
	client  *http.Client
	timeout time.Duration
	slots   chan struct{}
	now     func() time.Time

	mu       sync.Mutex
	token    string
	tokenExp time.Time
}

// New returns the connector of the hub o.ConnectionString names.
func New(o Options) (*Hub, error) {
	if o.ConnectionString.HostName == "" || len(o.ConnectionString.Key) == 0 {
		return nil, errors.New("remote hub: no connection string")
	}
	base := "https://" + o.ConnectionString.HostName
	if o.Endpoint != "" {
		base = o.Endpoint
		if !strings.Contains(base, "://") {
			base = "https://" + base
		}
		u, err := url.Parse(base)
		if err != nil || u.Host == "" || u.Scheme != "https" {
			return nil, fmt.Errorf("remote hub %s: endpoint %q is not host:port or an https URL", o.ConnectionString.HostName, o.Endpoint)
		}
		base = "https://" + u.Host
	}
	rt := o.Transport
	if rt == nil {
		serverName, _, err := net.SplitHostPort(o.ConnectionString.HostName)
		if err != nil {
			serverName = o.ConnectionString.HostName
		}
		rt = &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     &tls.Config{RootCAs: o.RootCAs, ServerName: serverName, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: cmp.Or(o.MaxInFlight, DefaultMaxInFlight),
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   true,
		}
	}
	h := &Hub{
		cs:      o.ConnectionString,
		base:    base,
		client:  &http.Client{Transport: rt},
		timeout: cmp.Or(o.Timeout, DefaultTimeout),
		slots:   make(chan struct{}, max(cmp.Or(o.MaxInFlight, DefaultMaxInFlight), 1)),
		now:     o.Now,
	}
	if h.now == nil {
		h.now = time.Now
	}
	return h, nil
}

// HostName is the hub's name.
func (h *Hub) HostName() string { return h.cs.HostName }

// authorization returns a service SAS token for the hub, cached and
// renewed before it expires.
func (h *Hub) authorization() string {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.token == "" || h.tokenExp.Sub(now) < tokenRenew {
		h.tokenExp = now.Add(tokenLife)
		h.token = sas.New(h.cs.HostName, h.cs.Key, h.cs.KeyName, h.tokenExp)
	}
	return h.token
}

// response is a hub's answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request: within the hub's concurrency bound and the
// request timeout. An error is a transport failure (transient).
//
// Waiting for a turn (one of the hub's MaxInFlight slots) and the request
// share one budget, the request timeout: a request that waited for its
// turn has that much less time for its answer, and one that waited all of
// it fails transiently without being sent, so the registration engine's
// worker is free for other hubs' registrations while this hub's back off.
func (h *Hub) do(parent context.Context, method, path string, ifMatch string, body any) (response, error) {
	ctx, cancel := context.WithTimeout(parent, h.timeout)
	defer cancel()
	// timedOut reports that the budget ran out, not the caller's context.
	timedOut := func() bool { return ctx.Err() == context.DeadlineExceeded && parent.Err() == nil }
	inFlight := func() error {
		return &Transient{Msg: fmt.Sprintf("IoT hub %s: %d requests still in flight after %s", h.cs.HostName, cap(h.slots), h.timeout)}
	}
	select {
	case h.slots <- struct{}{}:
		// A slot that freed at the instant the budget ran out (by the clock:
		// the context may not say so yet) is no turn: give it back, as if
		// the wait had timed out, rather than send a request already late.
		if dl, _ := ctx.Deadline(); !time.Now().Before(dl) {
			<-h.slots
			if pd, ok := parent.Deadline(); parent.Err() != nil || ok && !pd.After(dl) {
				return response{}, cmp.Or(parent.Err(), context.DeadlineExceeded) // the caller's deadline, not the hub's
			}
			return response{}, inFlight()
		}
	case <-ctx.Done():
		if timedOut() {
			return response{}, inFlight()
		}
		return response{}, parent.Err()
	}
	defer func() { <-h.slots }()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path+"?api-version="+APIVersion, rd)
	if err != nil {
		return response{}, err
	}
	req.Host = h.cs.HostName
	req.Header.Set("Authorization", h.authorization())
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "dps-remote-hub")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		if timedOut() {
			return response{}, fmt.Errorf("IoT hub %s did not answer %s %s within %s", h.cs.HostName, method, path, h.timeout)
		}
		return response{}, fmt.Errorf("IoT hub %s: %s %s: %w", h.cs.HostName, method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return response{}, fmt.Errorf("IoT hub %s: %s %s: reading the answer: %w", h.cs.HostName, method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// Transient is a transient failure of the hub (429, 5xx): retried.
type Transient struct {
	Status int
	// Wait is the hub's Retry-After (zero when it sent none).
	Wait time.Duration
	Msg  string
}

func (e *Transient) Error() string { return e.Msg }

// RetryAfter is how long the hub asked to wait before the next attempt
// (zero: the engine's own backoff).
func (e *Transient) RetryAfter() time.Duration { return e.Wait }

// failure turns an error answer into a *dps.HubFailure (permanent) or a
// *Transient, for the operation what.
func (h *Hub) failure(r response, what string) error {
	cause := errorText(r)
	switch {
	case r.status == http.StatusTooManyRequests || r.status >= 500:
		t := &Transient{Status: r.status, Msg: fmt.Sprintf("IoT hub %s could not %s: HTTP %d %s", h.cs.HostName, what, r.status, cause)}
		if s := r.header.Get("Retry-After"); s != "" {
			if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n > 0 {
				t.Wait = time.Duration(n) * time.Second
			} else if at, err := http.ParseTime(s); err == nil {
				t.Wait = max(at.Sub(h.now()), 0)
			}
		}
		return t
	}
	var why string
	switch r.status {
	case http.StatusUnauthorized:
		why = fmt.Sprintf("the shared access policy %q was refused (a wrong key, or the policy does not exist)", h.cs.KeyName)
	case http.StatusForbidden:
		why = fmt.Sprintf("the hub refused the shared access policy %q (it needs RegistryWrite and ServiceConnect) or is full", h.cs.KeyName)
	case http.StatusBadRequest:
		why = "the hub rejected the request"
	case http.StatusNotFound:
		why = "not found (is this the hub's name, and its endpoint?)"
	case http.StatusPreconditionFailed:
		why = "the device changed on the hub meanwhile"
	default:
		why = "unexpected answer"
	}
	return &dps.HubFailure{Code: dps.CodeHubRejected,
		Message: fmt.Sprintf("IoT hub %s refused to %s: %s (HTTP %d %s).", h.cs.HostName, what, why, r.status, cause)}
}

// errorText is the cause an error body gives, short: IoT Hub's
// {"Message":"ErrorCode:Name;text",…} or {"errorCode":…,"message":…}.
func errorText(r response) string {
	var b struct {
		Message   string `json:"Message"`
		ErrorCode any    `json:"errorCode"`
		Msg       string `json:"message"`
	}
	s := ""
	if json.Unmarshal(r.body, &b) == nil {
		switch {
		case b.Message != "":
			s = b.Message
		case b.Msg != "":
			s = b.Msg
			if b.ErrorCode != nil {
				s = fmt.Sprint(b.ErrorCode) + " " + s
			}
		}
	}
	if s == "" {
		s = strings.TrimSpace(string(r.body))
	}
	if code := r.header.Get("iothub-errorcode"); code != "" && !strings.Contains(s, code) {
		s = code + " " + s
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.TrimSpace(s)
}

func devicePath(id string) string { return "/devices/" + url.PathEscape(id) }
func twinPath(id string) string   { return "/twins/" + url.PathEscape(id) }

// authentication is the identity's authentication as DPS writes it
// (azure-iothub-protocol.md §5.1): symmetric keys (sas), or the
// certificate's thumbprint (selfSigned), copied into the secondary when
// there is one.
func authentication(a dps.HubAuth) map[string]any {
	switch a.Type {
	case dps.HubAuthSAS, "":
		sec := cmp.Or(a.SecondaryKey, a.PrimaryKey)
		return map[string]any{"type": "sas", "symmetricKey": map[string]any{"primaryKey": string(a.PrimaryKey), "secondaryKey": string(sec)}}
	case dps.HubAuthSelfSigned:
		sec := cmp.Or(a.SecondaryThumbprint, a.PrimaryThumbprint)
		return map[string]any{"type": "selfSigned", "x509Thumbprint": map[string]any{"primaryThumbprint": a.PrimaryThumbprint, "secondaryThumbprint": sec}}
	}
	return map[string]any{"type": string(a.Type)}
}

// Provision creates the device identity d on the hub or writes over the
// one there, then writes its twin as d.TwinWrite says.
func (h *Hub) Provision(ctx context.Context, d dps.HubDevice) error {
	what := "create the device " + d.DeviceID
	dev := map[string]any{
		"deviceId":       d.DeviceID,
		"status":         "enabled",
		"authentication": authentication(d.Auth),
		"capabilities":   map[string]any{"iotEdge": d.IoTEdge},
	}
	r, err := h.do(ctx, http.MethodPut, devicePath(d.DeviceID), "", dev)
	if err != nil {
		return err
	}
	created := true
	switch {
	case r.status == http.StatusOK || r.status == http.StatusCreated:
	case r.status == http.StatusConflict:
		created = false
		if err := h.update(ctx, d, dev); err != nil {
			return err
		}
	default:
		return h.failure(r, what)
	}
	return h.writeTwin(ctx, d, created)
}

// update writes over an existing identity, keeping what DPS does not own.
func (h *Hub) update(ctx context.Context, d dps.HubDevice, dev map[string]any) error {
	what := "update the device " + d.DeviceID
	r, err := h.do(ctx, http.MethodGet, devicePath(d.DeviceID), "", nil)
	if err != nil {
		return err
	}
	if r.status != http.StatusOK {
		if r.status == http.StatusNotFound {
			// Deleted meanwhile, or not visible yet (IoT Hub's registry is
			// eventually consistent): try again.
			return &Transient{Status: r.status, Msg: fmt.Sprintf("IoT hub %s: the device %s exists but cannot be read yet", h.cs.HostName, d.DeviceID)}
		}
		return h.failure(r, what)
	}
	var cur map[string]any
	if err := json.Unmarshal(r.body, &cur); err != nil {
		return &dps.HubFailure{Code: dps.CodeHubRejected, Message: fmt.Sprintf("IoT hub %s answered GET %s with a body that is not a device.", h.cs.HostName, devicePath(d.DeviceID))}
	}
	for _, k := range []string{"status", "statusReason", "deviceScope", "parentScopes"} {
		if v, ok := cur[k]; ok && v != nil {
			dev[k] = v
		}
	}
	if caps, ok := cur["capabilities"].(map[string]any); ok {
		caps["iotEdge"] = d.IoTEdge
		dev["capabilities"] = caps
	}
	r, err = h.do(ctx, http.MethodPut, devicePath(d.DeviceID), `"*"`, dev)
	if err != nil {
		return err
	}
	if r.status != http.StatusOK && r.status != http.StatusCreated {
		return h.failure(r, what)
	}
	return nil
}

// writeTwin writes d's twin: on a new identity its initial twin (merged
// into the empty twin); on an existing one as d.TwinWrite says.
func (h *Hub) writeTwin(ctx context.Context, d dps.HubDevice, created bool) error {
	initial, err := initialTwin(d.Twin)
	if err != nil {
		return &dps.HubFailure{Code: dps.CodeHubRejected, Message: "The initial twin is not valid: " + err.Error()}
	}
	method := http.MethodPatch
	switch {
	case created:
		if initial == nil {
			return nil
		}
	case d.TwinWrite == dps.TwinKeep:
		return nil
	case d.TwinWrite == dps.TwinApply && initial == nil:
		return nil // nothing to apply
	default: // TwinReplace, TwinApply: the tags and desired properties become d's
		method = http.MethodPut
		if initial == nil {
			initial = map[string]any{"tags": map[string]any{}, "properties": map[string]any{"desired": map[string]any{}}}
		}
		if _, ok := initial["tags"]; !ok {
			initial["tags"] = map[string]any{}
		}
		if _, ok := initial["properties"]; !ok {
			initial["properties"] = map[string]any{"desired": map[string]any{}}
		}
	}
	r, err := h.do(ctx, method, twinPath(d.DeviceID), `"*"`, initial)
	if err != nil {
		return err
	}
	if r.status == http.StatusNotFound && created {
		// IoT Hub's registry is eventually consistent: the identity just
		// created may not be visible to the twins API yet.
		return &Transient{Status: r.status, Msg: fmt.Sprintf("%s: the twin of the new device %s is not found yet (HTTP 404); retrying", h.HostName(), d.DeviceID)}
	}
	if r.status != http.StatusOK {
		return h.failure(r, "write the twin of "+d.DeviceID)
	}
	return nil
}

// initialTwin decodes DPS's initial twin to its tags and desired
// properties; nil when there is none.
func initialTwin(raw json.RawMessage) (map[string]any, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return nil, nil
	}
	var t struct {
		Tags       map[string]any `json:"tags"`
		Properties *struct {
			Desired map[string]any `json:"desired"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, err
	}
	out := map[string]any{}
	if t.Tags != nil {
		out["tags"] = t.Tags
	}
	if t.Properties != nil && t.Properties.Desired != nil {
		desired := map[string]any{}
		for k, v := range t.Properties.Desired {
			if !strings.HasPrefix(k, "$") {
				desired[k] = v
			}
		}
		out["properties"] = map[string]any{"desired": desired}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// Removal reads the device identity a registration is about to leave on
// the hub (GET /devices/{id}), before the move commits
// (registration.DeviceRemover): hub, device ID and Replaces set to the
// identity's ETag, so that Remove deletes it only if it did not change
// since; nil when the hub has no such device. A hub that shows no ETag
// gets Replaces "" (Remove then deletes whatever is there).
func (h *Hub) Removal(ctx context.Context, hub, deviceID string) (*dps.HubDevice, error) {
	r, err := h.do(ctx, http.MethodGet, devicePath(deviceID), "", nil)
	if err != nil {
		return nil, err
	}
	switch r.status {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, nil
	default:
		return nil, h.failure(r, "read the device "+deviceID)
	}
	var dev struct {
		ETag string `json:"etag"`
	}
	if err := json.Unmarshal(r.body, &dev); err != nil {
		return nil, &dps.HubFailure{Code: dps.CodeHubRejected, Message: fmt.Sprintf("IoT hub %s answered GET %s with a body that is not a device.", h.cs.HostName, devicePath(deviceID))}
	}
	return &dps.HubDevice{Hub: hub, DeviceID: deviceID, Replaces: strings.Trim(dev.ETag, `"`)}, nil
}

// Remove deletes the device identity d names only if it did not change
// since Removal returned d (registration.DeviceDeleter): DELETE /devices/{id} with If-Match: "<ETag>"
// (d.Replaces; "*" when it is ""). 412 — the identity changed, say the
// device was provisioned there again — is a *dps.Error of
// dps.KindConflict, and nothing is deleted; absent (404) is not an error.
func (h *Hub) Remove(ctx context.Context, d dps.HubDevice) error {
	ifMatch := `"*"`
	if d.Replaces != "" {
		ifMatch = `"` + d.Replaces + `"`
	}
	r, err := h.do(ctx, http.MethodDelete, devicePath(d.DeviceID), ifMatch, nil)
	if err != nil {
		return err
	}
	switch r.status {
	case http.StatusOK, http.StatusNoContent, http.StatusNotFound:
		return nil
	case http.StatusPreconditionFailed:
		return dps.Errorf(dps.KindConflict, "IoT hub %s: the device %s changed since it was read (HTTP 412): not deleted", h.cs.HostName, d.DeviceID)
	}
	return h.failure(r, "delete the device "+d.DeviceID)
}

// Deprovision deletes the device identity; absent is not an error.
func (h *Hub) Deprovision(ctx context.Context, _ string, deviceID string) error {
	r, err := h.do(ctx, http.MethodDelete, devicePath(deviceID), `"*"`, nil)
	if err != nil {
		return err
	}
	switch r.status {
	case http.StatusOK, http.StatusNoContent, http.StatusNotFound:
		return nil
	}
	return h.failure(r, "delete the device "+deviceID)
}

// Twin returns the device's twin in DPS's initial-twin form: its tags and
// desired properties, without versions or metadata.
func (h *Hub) Twin(ctx context.Context, _ string, deviceID string) (json.RawMessage, error) {
	r, err := h.do(ctx, http.MethodGet, twinPath(deviceID), "", nil)
	if err != nil {
		return nil, err
	}
	if r.status == http.StatusNotFound {
		return nil, dps.Errorf(dps.KindNotFound, "the device %s is not on %s", deviceID, h.cs.HostName)
	}
	if r.status != http.StatusOK {
		return nil, h.failure(r, "read the twin of "+deviceID)
	}
	var t struct {
		Tags       map[string]any `json:"tags"`
		Properties struct {
			Desired map[string]any `json:"desired"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(r.body, &t); err != nil {
		return nil, fmt.Errorf("IoT hub %s: the twin of %s: %w", h.cs.HostName, deviceID, err)
	}
	desired := map[string]any{}
	for k, v := range t.Properties.Desired {
		if !strings.HasPrefix(k, "$") {
			desired[k] = v
		}
	}
	out := map[string]any{"properties": map[string]any{"desired": desired}}
	if len(t.Tags) > 0 {
		out["tags"] = t.Tags
	}
	return json.Marshal(out)
}

// Probe checks that the hub answers and takes the policy
// (GET /statistics/devices).
func (h *Hub) Probe(ctx context.Context) error {
	r, err := h.do(ctx, http.MethodGet, "/statistics/devices", "", nil)
	if err != nil {
		return err
	}
	if r.status != http.StatusOK {
		return h.failure(r, "report its statistics")
	}
	return nil
}
