package remote_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/hub/remote"
	"github.com/opendps/dps/internal/sas"
)

// The hub's name: httptest's certificate is for example.com (and 127.0.0.1).
const hubName = "example.com"

var policyKey = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

type request struct {
	Method, Path, IfMatch, Auth string
	Body                        map[string]any
	Ctx                         context.Context
}

// fakeHub is a test-side IoT hub: it records requests and answers them
// with answer.
type fakeHub struct {
	mu     sync.Mutex
	reqs   []request
	answer func(r request) (int, http.Header, string)
}

func (f *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	req := request{Method: r.Method, Path: r.URL.Path, IfMatch: r.Header.Get("If-Match"), Auth: r.Header.Get("Authorization"), Ctx: r.Context()}
	if len(raw) > 0 {
		json.Unmarshal(raw, &req.Body)
	}
	if r.URL.Query().Get("api-version") != remote.APIVersion || r.Host != hubName {
		http.Error(w, "bad request line", http.StatusTeapot)
		return
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	answer := f.answer
	f.mu.Unlock()
	status, h, body := answer(req)
	for k, v := range h {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func (f *fakeHub) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

func start(t *testing.T, answer func(r request) (int, http.Header, string), tweak func(*remote.Options)) (*remote.Hub, *fakeHub) {
	t.Helper()
	f := &fakeHub{answer: answer}
	srv := httptest.NewTLSServer(f)
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	cs, err := remote.ParseConnectionString("HostName=" + hubName + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + policyKey)
	if err != nil {
		t.Fatal(err)
	}
	o := remote.Options{ConnectionString: cs, Endpoint: srv.Listener.Addr().String(), RootCAs: pool, Timeout: 5 * time.Second}
	if tweak != nil {
		tweak(&o)
	}
	h, err := remote.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return h, f
}

func ok(body string) (int, http.Header, string) { return http.StatusOK, nil, body }

func symDevice() dps.HubDevice {
	return dps.HubDevice{Hub: hubName, DeviceID: "dev-1", Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "cHJpbWFyeWtleXByaW1hcnlrZXk="},
		Twin: json.RawMessage(`{"tags":{"site":"a"},"properties":{"desired":{"interval":5}}}`)}
}

func at(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, _ := v.(map[string]any)
		v = mm[p]
	}
	return v
}

// TestProvisionNewDevice: a new device is created without If-Match with
// the authentication DPS writes, then its initial twin is merged in with
// If-Match "*"; every request carries a service SAS token for the hub,
// signed with the policy's key, the same token until it nears expiry.
func TestProvisionNewDevice(t *testing.T) {
	now := time.Now()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	h, f := start(t, func(r request) (int, http.Header, string) { return ok(`{}`) }, func(o *remote.Options) {
		o.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	})
	d := symDevice()
	d.IoTEdge = true
	if err := h.Provision(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 2 || reqs[0].Method != http.MethodPut || reqs[0].Path != "/devices/dev-1" || reqs[0].IfMatch != "" ||
		reqs[1].Method != http.MethodPatch || reqs[1].Path != "/twins/dev-1" || reqs[1].IfMatch != `"*"` {
		t.Fatalf("requests = %+v", reqs)
	}
	b := reqs[0].Body
	if at(b, "authentication", "type") != "sas" || at(b, "authentication", "symmetricKey", "primaryKey") != string(d.Auth.PrimaryKey) ||
		at(b, "authentication", "symmetricKey", "secondaryKey") != string(d.Auth.PrimaryKey) || at(b, "capabilities", "iotEdge") != true || b["status"] != "enabled" {
		t.Fatalf("device body = %v", b)
	}
	if at(reqs[1].Body, "tags", "site") != "a" || at(reqs[1].Body, "properties", "desired", "interval") != float64(5) {
		t.Fatalf("twin body = %v", reqs[1].Body)
	}
	tok, err := sas.Parse(reqs[0].Auth)
	if err != nil || tok.KeyName != "iothubowner" || !tok.Valid([]byte("0123456789abcdef0123456789abcdef")) || !strings.EqualFold(tok.Resource, hubName) {
		t.Fatalf("token %q: %+v, %v", reqs[0].Auth, tok, err)
	}
	if reqs[1].Auth != reqs[0].Auth {
		t.Fatal("the token was not reused")
	}
	clock.Store(now.Add(55 * time.Minute).UnixNano()) // within 10 minutes of its expiry
	if err := h.Deprovision(context.Background(), hubName, "dev-1"); err != nil {
		t.Fatal(err)
	}
	if last := f.requests()[2]; last.Auth == reqs[0].Auth || last.Method != http.MethodDelete || last.IfMatch != `"*"` {
		t.Fatalf("after 55 minutes: %+v (token not renewed?)", last)
	}
}

// TestProvisionX509 writes selfSigned with the thumbprint in both slots.
func TestProvisionX509(t *testing.T) {
	h, f := start(t, func(r request) (int, http.Header, string) { return ok(`{}`) }, nil)
	tp := strings.Repeat("ab", 32)
	if err := h.Provision(context.Background(), dps.HubDevice{Hub: hubName, DeviceID: "x-1", Auth: dps.HubAuth{Type: dps.HubAuthSelfSigned, PrimaryThumbprint: tp}}); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 1 { // no initial twin: no twin write
		t.Fatalf("requests = %+v", reqs)
	}
	b := reqs[0].Body
	if at(b, "authentication", "type") != "selfSigned" || at(b, "authentication", "x509Thumbprint", "primaryThumbprint") != tp || at(b, "authentication", "x509Thumbprint", "secondaryThumbprint") != tp {
		t.Fatalf("device body = %v", b)
	}
}

// TestProvisionExisting: 409 → the device is read and written over with
// If-Match "*", keeping its status; its twin's tags and desired
// properties are replaced (PUT) unless the twin is kept.
func TestProvisionExisting(t *testing.T) {
	for _, tc := range []struct {
		write     dps.TwinWrite
		twinWrite string // "" none
	}{{dps.TwinReplace, http.MethodPut}, {dps.TwinApply, http.MethodPut}, {dps.TwinKeep, ""}} {
		h, f := start(t, func(r request) (int, http.Header, string) {
			switch {
			case r.Method == http.MethodPut && r.Path == "/devices/dev-1" && r.IfMatch == "":
				return http.StatusConflict, http.Header{"Iothub-Errorcode": {"DeviceAlreadyExists"}}, `{"Message":"ErrorCode:DeviceAlreadyExists;exists"}`
			case r.Method == http.MethodGet:
				return ok(`{"deviceId":"dev-1","etag":"x","status":"disabled","statusReason":"stolen","capabilities":{"iotEdge":false}}`)
			}
			return ok(`{}`)
		}, nil)
		d := symDevice()
		d.TwinWrite = tc.write
		if err := h.Provision(context.Background(), d); err != nil {
			t.Fatal(err)
		}
		reqs := f.requests()
		want := 3
		if tc.twinWrite != "" {
			want = 4
		}
		if len(reqs) != want || reqs[1].Method != http.MethodGet || reqs[2].Method != http.MethodPut || reqs[2].IfMatch != `"*"` {
			t.Fatalf("%d: requests = %+v", tc.write, reqs)
		}
		if b := reqs[2].Body; b["status"] != "disabled" || b["statusReason"] != "stolen" || at(b, "authentication", "type") != "sas" {
			t.Fatalf("%d: update body = %v", tc.write, b)
		}
		if tc.twinWrite != "" && (reqs[3].Method != tc.twinWrite || reqs[3].IfMatch != `"*"` || at(reqs[3].Body, "tags", "site") != "a") {
			t.Fatalf("%d: twin write = %+v", tc.write, reqs[3])
		}
	}
}

// TestFailures: 429 (with and without Retry-After), 500 and 503 and a hub
// that hangs are transient; 401, 403, 400 and 404 on create are a
// *dps.HubFailure that names the hub and the cause, never the key.
func TestFailures(t *testing.T) {
	for _, tc := range []struct {
		name      string
		status    int
		header    http.Header
		permanent bool
		wait      time.Duration
		says      string
	}{
		{"429 with Retry-After", 429, http.Header{"Retry-After": {"7"}}, false, 7 * time.Second, "HTTP 429"},
		{"429 without", 429, nil, false, 0, "HTTP 429"},
		{"500", 500, nil, false, 0, "HTTP 500"},
		{"503", 503, http.Header{"Retry-After": {"2"}}, false, 2 * time.Second, "HTTP 503"},
		{"401", 401, nil, true, 0, `shared access policy "iothubowner" was refused`},
		{"403", 403, nil, true, 0, "RegistryWrite and ServiceConnect"},
		{"400", 400, nil, true, 0, "rejected"},
		{"404", 404, nil, true, 0, "HTTP 404"},
	} {
		h, _ := start(t, func(r request) (int, http.Header, string) {
			return tc.status, tc.header, `{"Message":"ErrorCode:Something;the cause","ExceptionMessage":""}`
		}, nil)
		err := h.Provision(context.Background(), symDevice())
		if err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		f, isFailure := errors.AsType[*dps.HubFailure](err)
		if isFailure != tc.permanent {
			t.Fatalf("%s: %T %v, permanent = %v", tc.name, err, err, isFailure)
		}
		if isFailure && f.Code != dps.CodeHubRejected {
			t.Fatalf("%s: code %d", tc.name, f.Code)
		}
		if !strings.Contains(err.Error(), hubName) || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "the cause") || strings.Contains(err.Error(), policyKey) {
			t.Fatalf("%s: message %q", tc.name, err)
		}
		if !tc.permanent {
			tr, ok := errors.AsType[*remote.Transient](err)
			if !ok || tr.RetryAfter() != tc.wait {
				t.Fatalf("%s: %v, retry after %v", tc.name, err, tr)
			}
		}
	}
}

// TestHungHub: a hub that does not answer fails the request at the
// timeout, transiently; with MaxInFlight 2, no more than two requests are
// in flight to it however many provisionings wait, and a waiting one
// gives up (transiently) after the timeout too.
func TestHungHub(t *testing.T) {
	release := make(chan struct{})
	var inFlight, most atomic.Int32
	h, _ := start(t, func(r request) (int, http.Header, string) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		select {
		case <-release:
		case <-r.Ctx.Done(): // the connector gave up
		}
		return ok(`{}`)
	}, func(o *remote.Options) { o.Timeout, o.MaxInFlight = 300*time.Millisecond, 2 })
	defer close(release)
	begin := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() { errs <- h.Provision(context.Background(), symDevice()) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil || !strings.Contains(err.Error(), "did not answer") && !strings.Contains(err.Error(), "2 requests still in flight") {
			t.Fatalf("error = %v", err)
		}
		if _, ok := errors.AsType[*dps.HubFailure](err); ok {
			t.Fatalf("a hung hub is a permanent failure: %v", err)
		}
	}
	if m := most.Load(); m > 2 || m == 0 {
		t.Fatalf("%d requests in flight at once", m)
	}
	// Two requests time out after 300 ms; the others wait for a turn
	// within the same 300 ms (TestTurnAndRequestShareTheTimeout).
	if el := time.Since(begin); el < 300*time.Millisecond || el > 5*time.Second {
		t.Fatalf("took %s", el)
	}
}

// TestTwinAndDeprovision: Twin is the initial-twin form (no $version or
// $metadata, no reported); Deprovision accepts 404.
func TestTwinAndDeprovision(t *testing.T) {
	h, _ := start(t, func(r request) (int, http.Header, string) {
		switch {
		case r.Method == http.MethodGet && r.Path == "/twins/dev-1":
			return ok(`{"deviceId":"dev-1","etag":"AAAAAAAAAAE=","version":4,"tags":{"site":"b"},"properties":{"desired":{"interval":9,"$metadata":{},"$version":3},"reported":{"fw":"1.0","$version":2}}}`)
		case r.Method == http.MethodDelete:
			return http.StatusNotFound, nil, `{"Message":"ErrorCode:DeviceNotFound;dev-1"}`
		}
		return http.StatusNotFound, nil, `{}`
	}, nil)
	tw, err := h.Twin(context.Background(), hubName, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	json.Unmarshal(tw, &got)
	if at(got, "tags", "site") != "b" || at(got, "properties", "desired", "interval") != float64(9) || at(got, "properties", "desired", "$version") != nil || at(got, "properties", "reported") != nil {
		t.Fatalf("twin = %s", tw)
	}
	if err := h.Deprovision(context.Background(), hubName, "dev-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Twin(context.Background(), hubName, "gone"); dps.KindOf(err) != dps.KindNotFound {
		t.Fatalf("twin of an unknown device: %v", err)
	}
}

// TestRemovalAndRemove: Removal reads the identity's ETag (GET
// /devices/{id}; nil when 404); Remove deletes with If-Match: "<ETag>"
// ("*" without one): 412 is a KindConflict and nothing else is tried, 404
// is not an error, a 503 is transient.
func TestRemovalAndRemove(t *testing.T) {
	etag := "MTIz"
	h, f := start(t, func(r request) (int, http.Header, string) {
		switch {
		case r.Method == http.MethodGet && r.Path == "/devices/dev-1":
			return ok(`{"deviceId":"dev-1","etag":"` + etag + `","status":"enabled"}`)
		case r.Method == http.MethodGet:
			return http.StatusNotFound, nil, `{"Message":"ErrorCode:DeviceNotFound;gone"}`
		case r.Method == http.MethodDelete && r.Path == "/devices/busy":
			return http.StatusServiceUnavailable, nil, `{}`
		case r.Method == http.MethodDelete && r.Path == "/devices/gone":
			return http.StatusNotFound, nil, `{}`
		case r.Method == http.MethodDelete && r.IfMatch != `"*"` && r.IfMatch != `"`+etag+`"`:
			return http.StatusPreconditionFailed, nil, `{"Message":"ErrorCode:PreconditionFailed;etag"}`
		case r.Method == http.MethodDelete:
			return http.StatusNoContent, nil, ""
		}
		return http.StatusTeapot, nil, `{}`
	}, nil)
	ctx := context.Background()
	d, err := h.Removal(ctx, hubName, "dev-1")
	if err != nil || d == nil || d.Hub != hubName || d.DeviceID != "dev-1" || d.Replaces != etag {
		t.Fatalf("Removal = %+v, %v; want the identity with its ETag", d, err)
	}
	if gone, err := h.Removal(ctx, hubName, "gone"); gone != nil || err != nil {
		t.Fatalf("Removal of an absent device = %+v, %v; want nil, nil", gone, err)
	}
	if err := h.Remove(ctx, *d); err != nil {
		t.Fatalf("Remove with the current ETag: %v", err)
	}
	etag = "NDU2" // provisioned again meanwhile
	if err := h.Remove(ctx, *d); dps.KindOf(err) != dps.KindConflict {
		t.Fatalf("Remove with a stale ETag: %v, want a conflict", err)
	}
	if err := h.Remove(ctx, dps.HubDevice{Hub: hubName, DeviceID: "gone", Replaces: etag}); err != nil {
		t.Fatalf("Remove of an absent device: %v", err)
	}
	err = h.Remove(ctx, dps.HubDevice{Hub: hubName, DeviceID: "busy", Replaces: etag})
	if _, permanent := errors.AsType[*dps.HubFailure](err); err == nil || permanent || dps.KindOf(err) == dps.KindConflict {
		t.Fatalf("Remove answered 503: %v, want a transient error", err)
	}
	if err := h.Remove(ctx, dps.HubDevice{Hub: hubName, DeviceID: "dev-1"}); err != nil {
		t.Fatalf("Remove without an ETag: %v", err)
	}
	var ifMatch []string
	for _, r := range f.requests() {
		if r.Method == http.MethodDelete {
			ifMatch = append(ifMatch, r.IfMatch)
		}
	}
	if want := []string{`"MTIz"`, `"MTIz"`, `"NDU2"`, `"NDU2"`, `"*"`}; !slices.Equal(ifMatch, want) {
		t.Errorf("If-Match of the deletes = %q, want %q", ifMatch, want)
	}
}

func TestParseConnectionString(t *testing.T) {
	cs, err := remote.ParseConnectionString("HostName=h.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + policyKey)
	if err != nil || cs.HostName != "h.azure-devices.net" || cs.KeyName != "iothubowner" || strings.Contains(cs.String(), policyKey) {
		t.Fatalf("%+v %v", cs, err)
	}
	for _, bad := range []string{"", "HostName=h", "HostName=h;SharedAccessKeyName=p", "HostName=h;SharedAccessKeyName=p;SharedAccessKey=!!notb64",
		"HostName=h;DeviceId=d;SharedAccessKey=" + policyKey} {
		if _, err := remote.ParseConnectionString(bad); err == nil || strings.Contains(err.Error(), "notb64") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestNewDeviceTwinNotFoundYet: the twin of a device just created may
// answer 404 for a moment (IoT Hub's registry is eventually consistent):
// transient, retried; a 404 on the twin of an existing device is not.
func TestNewDeviceTwinNotFoundYet(t *testing.T) {
	h, _ := start(t, func(r request) (int, http.Header, string) {
		if strings.HasPrefix(r.Path, "/twins/") {
			return http.StatusNotFound, nil, `{"Message":"ErrorCode:DeviceNotFound;not yet"}`
		}
		return ok(`{}`)
	}, nil)
	err := h.Provision(context.Background(), symDevice())
	var tr *remote.Transient
	if !errors.As(err, &tr) || tr.Status != http.StatusNotFound {
		t.Fatalf("Provision = %v (%T), want a transient 404", err, err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestTurnAndRequestShareTheTimeout: waiting for one of the hub's request
// slots and the request itself share one Timeout: with the only slot held
// by a hung request, a provisioning that waited 9 s of its 10 s for its
// turn has 1 s left for the hub's answer, and one that never got a turn
// gives up at its 10 s too, sending nothing, even when the slot frees at
// that very instant; both fail transiently. The caller's own deadline is
// not reported as the hub's.
func TestTurnAndRequestShareTheTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sent atomic.Int32
		hung := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			sent.Add(1)
			<-r.Context().Done()
			return nil, r.Context().Err()
		})
		cs, err := remote.ParseConnectionString("HostName=" + hubName + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + policyKey)
		if err != nil {
			t.Fatal(err)
		}
		h, err := remote.New(remote.Options{ConnectionString: cs, Timeout: 10 * time.Second, MaxInFlight: 1, Transport: hung})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		go h.Provision(ctx, symDevice()) // holds the slot until +10 s
		time.Sleep(time.Second)
		type outcome struct {
			took time.Duration
			err  error
		}
		// Two provisionings wait for the slot from the same instant, so
		// their budgets end together: the first in line gets the slot at
		// +10 s and 1 s for its answer; the second gets the slot only when
		// the first gives it back, at the very instant its own budget ends,
		// and must not send a request then. One is queued after the other
		// (synctest.Wait), so which is first is known.
		var results [2]chan outcome
		for i := range results {
			results[i] = make(chan outcome, 1)
			go func() {
				begin := time.Now()
				err := h.Provision(ctx, symDevice())
				results[i] <- outcome{time.Since(begin), err}
			}()
			synctest.Wait() // blocked on the slot
		}
		for i, want := range []string{"did not answer", "1 requests still in flight after 10s"} {
			r := <-results[i]
			if r.took != 10*time.Second {
				t.Errorf("provisioning %d behind a hung request failed after %s, want its 10 s timeout: %v", i, r.took, r.err)
			}
			if _, ok := errors.AsType[*dps.HubFailure](r.err); ok || r.err == nil || !strings.Contains(r.err.Error(), want) {
				t.Errorf("provisioning %d: error = %v, want a transient failure saying %q", i, r.err, want)
			}
		}
		if n := sent.Load(); n != 2 {
			t.Errorf("%d requests sent, want 2: the hung one and the first waiter's", n)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := h.Provision(cctx, symDevice()); !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "did not answer") {
			t.Errorf("the caller's deadline: %v, want its context's error", err)
		}
	})
}
