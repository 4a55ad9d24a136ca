package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/hub/builtin"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/wire"
)

// TestRemoteHubIsAnotherDPS: dps A links dps B's built-in hub through
// B's hub connection string (B's CA in caFile). Devices provisioned on A
// — symmetric key, X.509, custom allocation with an initial twin — appear
// on B with the authentication DPS writes and their twins (read through
// B's service API) and connect to B; re-provisioning one to A's own
// built-in hub migrates its twin and deletes it from B. A's /readyz
// reports the remote hub.
func TestRemoteHubIsAnotherDPS(t *testing.T) {
	ctx := context.Background()
	hubKey := dpstest.Key(32)
	b, bhc := startServer(t, t.TempDir(), fmt.Sprintf(`linkedHubs:
  - hostName: hub-b.example.net
    accessPolicies: [ { name: iothubowner, primaryKey: %q, rights: [RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect] } ]
`, hubKey))
	hook, hookCA := newHookServer(t)
	aDir := t.TempDir()
	a, ahc := startServer(t, aDir, fmt.Sprintf(policiesYAML, ownerKey, readerKey)+fmt.Sprintf(`webhook: { caFile: %s, timeout: 5s, retryBudget: 10s }
linkedHubs:
  - hostName: hub-a.example.net
  - hostName: hub-b.example.net
    connectionString: "HostName=hub-b.example.net;SharedAccessKeyName=iothubowner;SharedAccessKey=%s"
    caFile: %s
    endpoint: %s
    timeout: 5s
`, hookCA, hubKey, b.caFile, b.httpsLn.Addr()))
	svc := serviceClient(t, a, ahc, "provisioningserviceowner", ownerKey)
	onB := []string{"hub-b.example.net"}
	migrate := &wire.ReprovisionPolicy{UpdateHubAssignment: new(true), MigrateDeviceData: new(true)}

	// B's service API, as the hub's iothubowner.
	bService := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, b.endpoint()+path+"?api-version=2021-04-12", bytes.NewReader([]byte(body)))
		req.Host = "hub-b.example.net"
		req.Header.Set("Authorization", sas.New("hub-b.example.net", mustB64(t, hubKey), "iothubowner", time.Now().Add(time.Hour)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("If-Match", "*")
		resp, err := bhc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		json.Unmarshal(raw, &m)
		return resp.StatusCode, m
	}
	assigned := func(res *device.Result, err error, hub, substatus string) {
		t.Helper()
		if err != nil || res.Status != "assigned" || res.RegistrationState == nil || res.RegistrationState.AssignedHub != hub ||
			substatus != "" && res.RegistrationState.Substatus != substatus {
			t.Fatalf("registration = %+v %+v, %v; want assigned to %s (%s)", res, res.RegistrationState, err, hub, substatus)
		}
	}
	bTLS := &tls.Config{RootCAs: bhc.Transport.(*http.Transport).TLSClientConfig.RootCAs, ServerName: "127.0.0.1"}
	connectB := func(id string, cred device.Credential, tc *tls.Config) *device.Hub {
		t.Helper()
		h, err := device.ConnectHub(ctx, device.HubOptions{Host: "hub-b.example.net", DeviceID: id, Credential: cred, Address: b.mqtt.Addr().String(), TLS: tc})
		if err != nil {
			t.Fatalf("%s connects to B: %v", id, err)
		}
		return h
	}

	// Symmetric key, with the enrollment's initial twin.
	sym, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "rem-sym", Attestation: symmetric(), IoTHubs: onB, ReprovisionPolicy: migrate,
		InitialTwin: json.RawMessage(`{"tags":{"site":"north"},"properties":{"desired":{"interval":5}}}`)}, "")
	if err != nil {
		t.Fatal(err)
	}
	key := sym.Attestation.SymmetricKey.PrimaryKey
	res, err := a.client(ahc).Register(ctx, "rem-sym", device.SymmetricKey(key), nil)
	assigned(res, err, "hub-b.example.net", "initialAssignment")
	code, dev := bService(http.MethodGet, "/devices/rem-sym", "")
	if auth, _ := dev["authentication"].(map[string]any); code != 200 || auth["type"] != "sas" || at(auth, "symmetricKey", "primaryKey") != key || dev["status"] != "enabled" {
		t.Fatalf("rem-sym on B: %d %v", code, dev)
	}
	code, tw := bService(http.MethodGet, "/twins/rem-sym", "")
	if code != 200 || at(tw, "tags", "site") != "north" || at(tw, "properties", "desired", "interval") != float64(5) {
		t.Fatalf("rem-sym's twin on B: %d %v", code, tw)
	}
	h := connectB("rem-sym", device.SymmetricKey(key), bTLS)
	if twin, err := h.Twin(ctx); err != nil || !strings.Contains(string(twin.Desired), `"interval":5`) {
		t.Fatalf("rem-sym's twin from its connection to B: %+v, %v", twin, err)
	}
	h.Close()

	// X.509: selfSigned with the SHA-256 thumbprint, primary and secondary.
	leaf := dpstest.SelfSigned(t, "rem-x509")
	if _, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "rem-x509", Attestation: x509Att("client", leaf.PEM()), IoTHubs: onB}, ""); err != nil {
		t.Fatal(err)
	}
	res, err = a.x509Client(t, "https", leaf.TLS()).Register(ctx, "rem-x509", nil, nil)
	assigned(res, err, "hub-b.example.net", "")
	sum := sha256.Sum256(leaf.Cert.Raw)
	code, dev = bService(http.MethodGet, "/devices/rem-x509", "")
	if auth, _ := dev["authentication"].(map[string]any); code != 200 || auth["type"] != "selfSigned" ||
		!strings.EqualFold(fmt.Sprint(at(auth, "x509Thumbprint", "primaryThumbprint")), hex.EncodeToString(sum[:])) ||
		!strings.EqualFold(fmt.Sprint(at(auth, "x509Thumbprint", "secondaryThumbprint")), hex.EncodeToString(sum[:])) {
		t.Fatalf("rem-x509 on B: %d %v", code, dev)
	}
	xt := bTLS.Clone()
	xt.Certificates = []tls.Certificate{leaf.TLS()}
	connectB("rem-x509", device.Certificate(leaf.TLS()), xt).Close()

	// Custom allocation: the webhook picks hub B and returns the twin.
	cad := &wire.CustomAllocationDefinition{WebhookURL: hook.srv.URL + "/api/allocate?code=fn-key", APIVersion: "2021-10-01"}
	cust, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "rem-custom", Attestation: symmetric(), AllocationPolicy: "custom", CustomAllocationDefinition: cad}, "")
	if err != nil {
		t.Fatal(err)
	}
	ckey := cust.Attestation.SymmetricKey.PrimaryKey
	res, err = a.client(ahc).Register(ctx, "rem-custom", device.SymmetricKey(ckey), map[string]any{"model": "heatpump"})
	assigned(res, err, "hub-b.example.net", "")
	code, tw = bService(http.MethodGet, "/twins/rem-custom", "")
	if code != 200 || at(tw, "tags", "model") != "heatpump" || at(tw, "properties", "desired", "interval") != float64(30) {
		t.Fatalf("rem-custom's twin on B: %d %v", code, tw)
	}
	connectB("rem-custom", device.SymmetricKey(ckey), bTLS).Close()

	// A's banner shows the hub as remote, never its key.
	var banner strings.Builder
	a.printBanner(&banner)
	if !strings.Contains(banner.String(), "hub-b.example.net (remote)") || strings.Contains(banner.String(), hubKey) {
		t.Fatalf("A's banner:\n%s", banner.String())
	}
	// A's readiness names the remote hub.
	if body := get(t, "http://"+a.adminLn.Addr().String()+"/readyz"); !strings.Contains(body, "remote hub hub-b.example.net: ok") {
		t.Fatalf("A's /readyz: %q", body)
	}

	// Re-provisioning rem-sym to A's built-in hub migrates its twin (as
	// changed on B) and deletes it from B.
	if code, _ := bService(http.MethodPatch, "/twins/rem-sym", `{"tags":{"owner":"ops"},"properties":{"desired":{"mode":"eco"}}}`); code != 200 {
		t.Fatalf("twin update on B: %d", code)
	}
	sym.IoTHubs = []string{"hub-a.example.net"}
	if _, err := svc.PutEnrollment(ctx, sym, sym.ETag); err != nil {
		t.Fatal(err)
	}
	res, err = a.client(ahc).Register(ctx, "rem-sym", device.SymmetricKey(key), nil)
	assigned(res, err, "hub-a.example.net", "deviceDataMigrated")
	eventually(t, "rem-sym deleted from B once its move committed (in the background)", func() bool {
		code, _ := bService(http.MethodGet, "/devices/rem-sym", "")
		return code == http.StatusNotFound
	})
	raw, err := (&builtin.Connector{Store: a.store}).Twin(ctx, "hub-a.example.net", "rem-sym")
	var migrated map[string]any
	json.Unmarshal(raw, &migrated)
	if err != nil || at(migrated, "tags", "owner") != "ops" || at(migrated, "tags", "site") != "north" || at(migrated, "properties", "desired", "mode") != "eco" {
		t.Fatalf("rem-sym's twin on A: %s, %v", raw, err)
	}

	// And back: built-in → remote removes A's record and re-creates the
	// device on B.
	if sym, err = svc.Enrollment(ctx, "rem-sym"); err != nil {
		t.Fatal(err)
	}
	sym.IoTHubs = onB
	if _, err := svc.PutEnrollment(ctx, sym, sym.ETag); err != nil {
		t.Fatal(err)
	}
	res, err = a.client(ahc).Register(ctx, "rem-sym", device.SymmetricKey(key), nil)
	assigned(res, err, "hub-b.example.net", "reprovisionedToInitialAssignment") // back to its first hub
	if _, err := a.store.HubDevice(ctx, "hub-a.example.net", "rem-sym"); err == nil {
		t.Fatal("rem-sym is still on A's hub")
	}
	if n := countRows(t, aDir, "hub_devices"); n != 0 { // every device is on B
		t.Fatalf("A's store holds %d hub device records", n)
	}
	code, tw = bService(http.MethodGet, "/twins/rem-sym", "")
	if code != 200 || at(tw, "tags", "owner") != "ops" || at(tw, "properties", "desired", "mode") != "eco" {
		t.Fatalf("rem-sym's twin back on B: %d %v", code, tw)
	}
}

func at(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, _ := v.(map[string]any)
		v = mm[p]
	}
	return v
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// flakyHub is a test-side IoT hub whose answers depend on the device: a
// device ID's prefix says how the hub fails (first, on its first calls;
// always, for good).
type flakyHub struct {
	mu    sync.Mutex
	calls map[string]int // by device ID
	times map[string][]time.Time
}

func (f *flakyHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := path.Base(r.URL.Path)
	f.mu.Lock()
	f.calls[id]++
	n := f.calls[id]
	f.times[id] = append(f.times[id], time.Now())
	f.mu.Unlock()
	fail := func(status int, h ...string) {
		for i := 0; i+1 < len(h); i += 2 {
			w.Header().Set(h[i], h[i+1])
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"Message":"ErrorCode:Test%d;test hub says %d","ExceptionMessage":""}`, status, status)
	}
	switch mode, _, _ := strings.Cut(id, "-"); {
	case mode == "t429ra" && n == 1:
		fail(http.StatusTooManyRequests, "Retry-After", "3")
	case mode == "t429" && n == 1:
		fail(http.StatusTooManyRequests)
	case mode == "t500" && n <= 2:
		fail(http.StatusInternalServerError)
	case mode == "t401":
		fail(http.StatusUnauthorized)
	case mode == "t403":
		fail(http.StatusForbidden)
	case mode == "t400":
		fail(http.StatusBadRequest)
	case mode == "t500x":
		fail(http.StatusInternalServerError, "Retry-After", "1")
	case mode == "hang" && n == 1:
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	case mode == "t409" && r.Method == http.MethodPut && r.Header.Get("If-Match") == "":
		fail(http.StatusConflict)
	default:
		io.WriteString(w, `{"deviceId":"`+id+`","status":"enabled"}`)
	}
}

// TestRemoteHubFailures: the failure table end to end. A remote hub
// answering 429 (with and without Retry-After), 500, 409 or hanging has
// the registration retried (it stays assigning) and then assigned, never
// before the hub's Retry-After; 401, 403 and 400 fail it at once with
// 400210 and a message naming the hub and the cause (for 401/403 the
// policy), never the key; a hub that keeps failing (500) or is down fails
// it with 503201 once hubRetryBudget has passed, naming the hub; devices
// of the same hub and of other hubs are not held up meanwhile, and a hub
// that is down is reported by /readyz without failing the instance.
func TestRemoteHubFailures(t *testing.T) {
	ctx := context.Background()
	fake := &flakyHub{calls: map[string]int{}, times: map[string][]time.Time{}}
	srv := httptest.NewTLSServer(fake)
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "hub-ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	hubKey := dpstest.Key(32)
	// httptest's certificate is for example.com.
	a, ahc := startServer(t, t.TempDir(), fmt.Sprintf(`hubRetryBudget: 6s
linkedHubs:
  - hostName: example.com
    connectionString: "HostName=example.com;SharedAccessKeyName=provisioner;SharedAccessKey=%s"
    caFile: %s
    endpoint: %s
    timeout: 1s
  - hostName: down.example.com
    connectionString: "HostName=down.example.com;SharedAccessKeyName=provisioner;SharedAccessKey=%s"
    endpoint: 127.0.0.1:1
    applyAllocationPolicy: false
  - hostName: local.example.com
    applyAllocationPolicy: false
`, hubKey, ca, srv.Listener.Addr(), hubKey))
	// A hub that is down is reported; the instance stays ready.
	resp, err := http.Get("http://" + a.adminLn.Addr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "remote hub down.example.com: down") ||
		!strings.Contains(string(body), "remote hub example.com: ok") || strings.Contains(string(body), hubKey) {
		t.Fatalf("/readyz: %d %q", resp.StatusCode, body)
	}
	enroll := func(id string, hubs ...string) device.Credential {
		e := dpstest.SymmetricKeyEnrollment(id)
		e.IoTHubs = hubs
		e = dpstest.MustPutEnrollment(t, a.store, e)
		return device.SymmetricKey(string(e.Attestation.SymmetricKey.PrimaryKey))
	}
	register := func(id string, hubs ...string) (*device.Result, time.Duration) {
		cred := enroll(id, hubs...)
		begin := time.Now()
		res, err := a.client(ahc).Register(ctx, id, cred, nil)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		return res, time.Since(begin)
	}
	// Two devices whose hub keeps failing: each stays assigning through
	// its retries, then fails with 503201 once the 6 s budget has passed.
	type exhausted struct {
		id, hub string
		res     *device.Result
		took    time.Duration
		polled  string // status of a poll 2 s in
	}
	gaveUp := make(chan exhausted, 2)
	for _, tc := range []struct{ id, hub string }{{"t500x-1", "example.com"}, {"down-1", "down.example.com"}} {
		cred := enroll(tc.id, tc.hub)
		go func() {
			c := a.client(ahc)
			begin := time.Now()
			first, _, err := c.Start(ctx, tc.id, cred, nil)
			if err != nil {
				gaveUp <- exhausted{id: tc.id, hub: tc.hub, polled: err.Error()}
				return
			}
			time.Sleep(2 * time.Second)
			mid, _, err := c.Poll(ctx, tc.id, first.OperationID, cred)
			polled := first.Status + " then "
			if err != nil {
				polled += err.Error()
			} else {
				polled += mid.Status
			}
			rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			res, err := c.Register(rctx, tc.id, cred, nil) // the operation in flight, to its end
			if err != nil {
				polled += "; " + err.Error()
				res = nil
			}
			gaveUp <- exhausted{tc.id, tc.hub, res, time.Since(begin), polled}
		}()
	}
	hung := make(chan *device.Result, 1)
	go func() { res, _ := register("hang-1"); hung <- res }()
	time.Sleep(200 * time.Millisecond) // hang-1's request hangs now
	if res, took := register("fine-1"); res.Status != "assigned" || took > 900*time.Millisecond {
		t.Fatalf("fine-1 next to a hung request: %+v after %s", res, took)
	}
	// Held up by the failing hubs' retries, local-1 would wait seconds:
	// their budget (6 s), or t500x-1's backoff (1, 2, 4 s). 3 s leaves a
	// loaded machine room and still tells.
	if res, took := register("local-1", "local.example.com"); res.Status != "assigned" || took > 3*time.Second {
		t.Fatalf("local-1 on a built-in hub while the remote hubs fail: %+v after %s", res, took)
	}
	for _, id := range []string{"t429-1", "t500-1", "t409-1"} {
		if res, _ := register(id); res.Status != "assigned" || res.RegistrationState.AssignedHub != "example.com" {
			t.Fatalf("%s: %+v %+v", id, res, res.RegistrationState)
		}
	}
	if res, took := register("t429ra-1"); res.Status != "assigned" || took < 3*time.Second {
		t.Fatalf("t429ra-1 (Retry-After: 3): %+v after %s", res, took)
	}
	if res := <-hung; res.Status != "assigned" {
		t.Fatalf("hang-1: %+v", res)
	}
	for _, tc := range []struct{ id, says string }{
		{"t401-1", `the shared access policy "provisioner" was refused`},
		{"t403-1", `the hub refused the shared access policy "provisioner" (it needs RegistryWrite and ServiceConnect)`},
		{"t400-1", "the hub rejected the request"},
	} {
		res, _ := register(tc.id)
		rs := res.RegistrationState
		if res.Status != "failed" || rs.ErrorCode != 400210 || !strings.Contains(rs.ErrorMessage, "IoT hub example.com") ||
			!strings.Contains(rs.ErrorMessage, tc.says) || strings.Contains(rs.ErrorMessage, hubKey) {
			t.Errorf("%s: %+v %+v", tc.id, res, rs)
		}
	}
	for range 2 {
		g := <-gaveUp
		if g.res == nil {
			t.Errorf("%s: %s", g.id, g.polled)
			continue
		}
		rs := g.res.RegistrationState
		if g.polled != "assigning then assigning" || g.res.Status != "failed" || rs.ErrorCode != 503201 ||
			!strings.Contains(rs.ErrorMessage, "could not create the device on "+g.hub) || strings.Contains(rs.ErrorMessage, hubKey) ||
			g.took < 6*time.Second || g.took > 15*time.Second {
			t.Errorf("%s on a hub that keeps failing: %s, then %+v %+v after %s; want assigning, then failed with 503201 after the 6 s budget", g.id, g.polled, g.res, rs, g.took)
		}
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	for _, id := range []string{"t401-1", "t403-1", "t400-1"} {
		if fake.calls[id] != 1 {
			t.Errorf("%s was retried: %d calls", id, fake.calls[id])
		}
	}
	if n := fake.calls["t500-1"]; n != 3 { // two 500s, then the create
		t.Fatalf("t500-1: %d calls", n)
	}
	if n := fake.calls["t409-1"]; n != 3 { // PUT 409, GET, PUT If-Match
		t.Fatalf("t409-1: %d calls", n)
	}
	if at := fake.times["t429ra-1"]; len(at) < 2 || at[1].Sub(at[0]) < 3*time.Second {
		t.Errorf("t429ra-1 was retried before the hub's Retry-After (3 s): %v", at)
	}
	if n := fake.calls["t500x-1"]; n < 3 || n > 6 { // 0, 1, 3, 7 s: backoff with the hub's Retry-After: 1 as its floor
		t.Errorf("t500x-1: %d calls in its 6 s budget", n)
	}
}

// TestRemoteHubConfig: a remote hub's connection string comes from the
// file or DPSD_LINKEDHUBS_<N>_CONNECTIONSTRING, is checked at start (it
// parses, its HostName is the hub's), and no error repeats its key.
func TestRemoteHubConfig(t *testing.T) {
	key := dpstest.Key(32)
	base := "idScope: 0ne00000E2E\nlinkedHubs:\n  - { hostName: my-hub.azure-devices.net%s }\n"
	for _, tc := range []struct {
		name, extra, env, wantErr string
	}{
		{"from the file", `, connectionString: "HostName=my-hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=` + key + `"`, "", ""},
		{"from the environment", `, connectionString: "set below"`, "HostName=MY-HUB.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + key, ""},
		{"another hub's", `, connectionString: "HostName=other.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=` + key + `"`, "", "linkedHubs[0].connectionString"},
		{"no key name", `, connectionString: "HostName=my-hub.azure-devices.net;SharedAccessKey=` + key + `"`, "", "SharedAccessKeyName"},
		{"not base64", `, connectionString: "HostName=my-hub.azure-devices.net;SharedAccessKeyName=p;SharedAccessKey=` + key + `!"`, "", "not base64"},
		{"a missing CA file", `, connectionString: "HostName=my-hub.azure-devices.net;SharedAccessKeyName=p;SharedAccessKey=` + key + `", caFile: /nonexistent.pem`, "", "linkedHubs[0].caFile"},
		{"caFile on a built-in hub", `, caFile: /nonexistent.pem`, "", "remote hub's settings"},
	} {
		env := map[string]string{}
		if tc.env != "" {
			env["DPSD_LINKEDHUBS_0_CONNECTIONSTRING"] = tc.env
		}
		cfg, err := loadConfig(writeConfig(t, fmt.Sprintf(base, tc.extra)), func(k string) string { return env[k] })
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr == "" && cfg.LinkedHubs[0].BuiltIn():
			t.Errorf("%s: the hub is built in", tc.name)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), key) {
			t.Errorf("%s: the error shows the key: %v", tc.name, err)
		}
	}
	// hubRetryBudget: 0 is the default (10 minutes); otherwise 1s to 24h.
	for budget, wantErr := range map[string]bool{"0s": false, "1s": false, "30m": false, "500ms": true, "25h": true, "-1m": true} {
		cfg, err := loadConfig(writeConfig(t, "idScope: 0ne00000E2E\nhubRetryBudget: "+budget+"\n"), func(string) string { return "" })
		if wantErr != (err != nil) || err != nil && !strings.Contains(err.Error(), "hubRetryBudget") {
			t.Errorf("hubRetryBudget %s: %v", budget, err)
		}
		if err == nil && budget == "30m" && cfg.HubRetryBudget != 30*time.Minute {
			t.Errorf("hubRetryBudget %s read as %s", budget, cfg.HubRetryBudget)
		}
	}
}
