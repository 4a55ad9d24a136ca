package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/sas"
)

const testScope = "0ne00000E2E"

// startServer runs dpsd with the given YAML (dataDir and listeners are
// filled in) and returns it with an HTTP client that trusts its CA.
func startServer(t *testing.T, dir, extra string) (*server, *http.Client) {
	t.Helper()
	yaml := "idScope: " + testScope + "\ndataDir: " + dir + "\nlisten: { https: \"127.0.0.1:0\", mqtt: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\nretryAfterSeconds: 1\nlog: { level: debug }\n" + extra
	if !strings.Contains(extra, "throttling") {
		// Tests poll faster than Azure's 5 per 10 s; throttle_test.go
		// tests the default.
		yaml += "throttling: { device: { pollsPer10s: 0 } }\n"
	}
	if !strings.Contains(extra, "linkedHubs") {
		yaml += "linkedHubs:\n  - { hostName: hub-a.example.net }\n  - { hostName: hub-b.example.net, allocationWeight: 2 }\n"
	}
	path := filepath.Join(dir, "dpsd.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	s, err := start(context.Background(), cfg, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	pem, err := os.ReadFile(s.caFile)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509PoolFromPEM(pem)}}, Timeout: 10 * time.Second}
	return s, hc
}

func x509PoolFromPEM(pem []byte) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return pool
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (s *server) endpoint() string { return "https://" + s.httpsLn.Addr().String() }

func (s *server) client(hc *http.Client) *device.Client {
	return &device.Client{Endpoint: s.endpoint(), IDScope: s.idScope, HTTPClient: hc, PollInterval: 20 * time.Millisecond}
}

func countRows(t *testing.T, dir, table string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "dps.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM " + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEndToEndSymmetricKey(t *testing.T) {
	dir := t.TempDir()
	s, hc := startServer(t, dir, "")
	ctx := context.Background()
	e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("e2e-dev"))
	g := dpstest.MustPutGroup(t, s.store, dpstest.SymmetricKeyGroup("e2e-group"))
	derived := func(k dps.Key, id string) string {
		d, _ := device.DeriveKey(string(k), id)
		return d
	}
	c := s.client(hc)
	payload := map[string]any{"model": "thermostat", "fw": map[string]any{"version": "1.2.3", "tags": []any{"a", "b"}}}
	tests := []struct {
		name, id, key, group string
	}{
		{"ok/individual-primary", "e2e-dev", string(e.Attestation.SymmetricKey.PrimaryKey), ""},
		{"ok/individual-secondary", "e2e-dev", string(e.Attestation.SymmetricKey.SecondaryKey), ""},
		{"ok/group-derived-primary", "e2e-g-1", derived(g.Attestation.SymmetricKey.PrimaryKey, "e2e-g-1"), "e2e-group"},
		{"ok/group-derived-secondary", "e2e-g-2", derived(g.Attestation.SymmetricKey.SecondaryKey, "e2e-g-2"), "e2e-group"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := c.Register(ctx, tt.id, device.SymmetricKey(tt.key), payload)
			if err != nil {
				t.Fatal(err)
			}
			rs := res.RegistrationState
			if res.Status != "assigned" || rs == nil || rs.Status != "assigned" || rs.RegistrationID != tt.id {
				t.Fatalf("result = %+v", res)
			}
			if rs.AssignedHub != "hub-a.example.net" && rs.AssignedHub != "hub-b.example.net" {
				t.Errorf("assignedHub = %q", rs.AssignedHub)
			}
			if rs.DeviceID != tt.id || rs.Substatus == "" || rs.CreatedDateTimeUtc == "" || rs.LastUpdatedDateTimeUtc == "" || rs.ETag == "" {
				t.Errorf("registrationState incomplete: %+v", rs)
			}
			if tt.group != "" && (rs.SymmetricKey == nil || rs.SymmetricKey.EnrollmentGroupID != tt.group) {
				t.Errorf("symmetricKey.enrollmentGroupId missing: %+v", rs.SymmetricKey)
			}
			// The device's payload was accepted; the finished operation does
			// not keep it (it is needed only until the operation completes).
			op, err := s.store.Operation(ctx, res.OperationID)
			if err != nil {
				t.Fatal(err)
			}
			if len(op.Payload) > 0 && string(op.Payload) != "null" {
				t.Errorf("stored payload = %s", op.Payload)
			}
		})
	}

	regsBefore, opsBefore := countRows(t, dir, "registrations"), countRows(t, dir, "operations")
	expired := sas.New(testScope+"/registrations/e2e-dev", mustB64(t, string(e.Attestation.SymmetricKey.PrimaryKey)), "registration", time.Now().Add(-time.Hour))
	rejects := []struct {
		name   string
		client *device.Client
		id     string
		cred   device.Credential
	}{
		{"fail/wrong-key", c, "e2e-dev", device.SymmetricKey(dpstest.Key(32))},
		{"fail/unknown-device", c, "e2e-nobody", device.SymmetricKey(dpstest.Key(32))},
		{"fail/group-key-itself", c, "e2e-g-3", device.SymmetricKey(string(g.Attestation.SymmetricKey.PrimaryKey))},
		{"fail/wrong-scope", &device.Client{Endpoint: s.endpoint(), IDScope: "0ne0000WRNG", HTTPClient: hc}, "e2e-dev", device.SymmetricKey(string(e.Attestation.SymmetricKey.PrimaryKey))},
		{"fail/expired-token", c, "e2e-dev", rawToken(expired)},
		{"fail/no-credential", c, "e2e-dev", nil},
	}
	for _, tt := range rejects {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.client.Register(ctx, tt.id, tt.cred, map[string]any{"x": 1})
			var de *device.Error
			if !errors.As(err, &de) || de.StatusCode != 401 || de.ErrorCode != 401002 || de.TrackingID == "" || de.Timestamp == "" {
				t.Fatalf("err = %v, want HTTP 401 with errorCode 401002", err)
			}
		})
	}
	if r, o := countRows(t, dir, "registrations"), countRows(t, dir, "operations"); r != regsBefore || o != opsBefore {
		t.Errorf("rejected requests stored data: registrations %d→%d, operations %d→%d", regsBefore, r, opsBefore, o)
	}
}

type rawToken string

func (r rawToken) Authorization(string, time.Time, time.Duration) (string, error) {
	return string(r), nil
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEndToEndDisabled(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), "")
	e := dpstest.SymmetricKeyEnrollment("e2e-off")
	e.ProvisioningStatus = dps.ProvisioningDisabled
	e = dpstest.MustPutEnrollment(t, s.store, e)
	res, err := s.client(hc).Register(context.Background(), "e2e-off", device.SymmetricKey(string(e.Attestation.SymmetricKey.PrimaryKey)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "disabled" || res.RegistrationState == nil || res.RegistrationState.Status != "disabled" || res.RegistrationState.RegistrationID != "e2e-off" {
		t.Fatalf("result = %+v / %+v", res, res.RegistrationState)
	}
	if res.RegistrationState.AssignedHub != "" {
		t.Errorf("disabled device was assigned")
	}
}

// rawResponse is one HTTP exchange with the device API.
type rawResponse struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func do(t *testing.T, hc *http.Client, method, url, auth string, body []byte) rawResponse {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := rawResponse{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	if len(b) > 0 {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
			t.Errorf("%s %s: Content-Type = %q", method, url, ct)
		}
		if err := json.Unmarshal(b, &out.body); err != nil {
			t.Errorf("%s %s: body is not a JSON object: %s", method, url, b)
		}
	}
	return out
}

func TestDeviceAPIWire(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), "")
	e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("wire-dev"))
	key := mustB64(t, string(e.Attestation.SymmetricKey.PrimaryKey))
	auth := sas.New(testScope+"/registrations/wire-dev", key, "registration", time.Now().Add(time.Hour))
	base := s.endpoint() + "/" + testScope + "/registrations/wire-dev"

	// Register: 202, {operationId, status:"assigning"}, lower-case retry-after.
	r := do(t, hc, "PUT", base+"/register?api-version=2019-03-31", auth, []byte(`{"registrationId":"wire-dev","payload":{"a":[1,2,{"b":null}]}}`))
	if r.status != 202 || r.body["status"] != "assigning" || r.body["operationId"] == "" || len(r.body) != 2 {
		t.Fatalf("register = %d %s", r.status, r.raw)
	}
	if r.header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After = %q", r.header.Get("Retry-After"))
	}
	opID := r.body["operationId"].(string)
	// Every poll has operationId and status, and registrationState has registrationId and status.
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := do(t, hc, "GET", base+"/operations/"+opID+"?api-version=2021-06-01", auth, []byte(`{}`))
		rs, _ := p.body["registrationState"].(map[string]any)
		if p.body["operationId"] != opID || p.body["status"] == nil || rs == nil || rs["registrationId"] != "wire-dev" || rs["status"] == nil {
			t.Fatalf("poll = %d %s", p.status, p.raw)
		}
		if p.body["status"] == "assigned" {
			if p.status != 200 {
				t.Errorf("final poll status = %d", p.status)
			}
			break
		}
		if p.status != 202 || time.Now().After(deadline) {
			t.Fatalf("poll = %d %s", p.status, p.raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Case-insensitive routing and an upper-case scope.
	up := s.endpoint() + "/" + strings.ToUpper(testScope) + "/REGISTRATIONS/wire-dev"
	if p := do(t, hc, "GET", up+"/Operations/"+opID, auth, nil); p.status != 200 {
		t.Errorf("upper-case path = %d %s", p.status, p.raw)
	}
	// Status lookup.
	if p := do(t, hc, "POST", base+"?api-version=2021-06-01", auth, []byte(`{"registrationId":"wire-dev"}`)); p.status != 200 || p.body["assignedHub"] == nil || p.body["status"] != "assigned" {
		t.Errorf("status lookup = %d %s", p.status, p.raw)
	}

	big := append([]byte(`{"registrationId":"wire-dev","payload":"`), bytes.Repeat([]byte("x"), 97*1024)...)
	big = append(big, `"}`...)
	errorsTable := []struct {
		name, method, url string
		body              []byte
		status, code      int
	}{
		{"fail/unknown-operation", "GET", base + "/operations/1.abc.def", nil, 404, 404201},
		{"fail/body-too-large", "PUT", base + "/register", big, 413, 413001},
		{"fail/malformed-json", "PUT", base + "/register", []byte(`{"registrationId":`), 400, 400004},
		{"fail/body-not-object", "PUT", base + "/register", []byte(`[1,2]`), 400, 400004},
		{"fail/registration-id-mismatch", "PUT", base + "/register", []byte(`{"registrationId":"someone-else"}`), 400, 400004},
		{"fail/method", "DELETE", base + "/register", nil, 405, 405001},
		{"fail/unknown-path", "GET", s.endpoint() + "/nothing/here", nil, 404, 404001},
		{"fail/bad-registration-id", "PUT", s.endpoint() + "/" + testScope + "/registrations/bad%20id/register", []byte(`{}`), 400, 400004},
	}
	for _, tt := range errorsTable {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, hc, tt.method, tt.url, auth, tt.body)
			if r.status != tt.status || r.body["errorCode"] != float64(tt.code) || r.body["trackingId"] == nil || r.body["message"] == "" || r.body["timestampUtc"] == nil {
				t.Fatalf("got %d %s, want %d with errorCode %d", r.status, r.raw, tt.status, tt.code)
			}
		})
	}
}

func TestRestartCompletesAcceptedOperations(t *testing.T) {
	dir := t.TempDir()
	s, _ := startServer(t, dir, "")
	e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("restart-dev"))
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// An operation accepted just before a crash: persisted, not completed.
	db := dpstest.OpenSQLite(t, filepath.Join(dir, "dps.db"))
	now := time.Now().UTC()
	op := dps.Operation{ID: "1.0123456789abcdef.restart", RegistrationID: "restart-dev", Proof: dps.Proof{Type: dps.AttestationSymmetricKey}, Status: dps.StatusAssigning, Created: now, Updated: now}
	if _, err := db.CreateOperation(context.Background(), op); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s2, hc := startServer(t, dir, "")
	c := s2.client(hc)
	cred := device.SymmetricKey(string(e.Attestation.SymmetricKey.PrimaryKey))
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, _, err := c.Poll(context.Background(), "restart-dev", op.ID, cred)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status == "assigned" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("operation accepted before restart did not complete: %+v", res)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Registrations persist across restarts.
	if _, err := s2.store.Registration(context.Background(), "restart-dev"); err != nil {
		t.Fatal(err)
	}
}

func TestAdminEndpoints(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), "")
	e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("metrics-dev"))
	if _, err := s.client(hc).Register(context.Background(), "metrics-dev", device.SymmetricKey(string(e.Attestation.SymmetricKey.PrimaryKey)), nil); err != nil {
		t.Fatal(err)
	}
	admin := "http://" + s.adminLn.Addr().String()
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": `dps_registrations_total{outcome="assigned"} 1`} {
		resp, err := http.Get(admin + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("%s = %d, missing %q", path, resp.StatusCode, want)
		}
	}
}

func jsonDecode(resp *http.Response, v any) error {
	return json.NewDecoder(resp.Body).Decode(v)
}
