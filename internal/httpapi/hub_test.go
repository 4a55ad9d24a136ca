package httpapi_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/sas"
)

// hubHost is the built-in hub of these tests: the default hub's name,
// also the host DPS is reached by.
const hubHost = "localhost"

// hubStore is an in-memory iothub.Store (compare-and-set on ETags, IDs
// folded as the real stores fold them), its C2D queues in a real SQLite
// store.
type hubStore struct {
	iothub.CloudStore
	mu      sync.Mutex
	devices map[string]dps.HubDevice
	seq     int
	msgs    []dps.Message
}

func hubStoreKey(hub, id string) string { return strings.ToLower(hub) + "\x00" + strings.ToLower(id) }

func (m *hubStore) HubDevice(_ context.Context, hub, id string) (dps.HubDevice, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devices[hubStoreKey(hub, id)]
	if !ok {
		return d, dps.Errorf(dps.KindNotFound, "no device %s", id)
	}
	return d, nil
}

// ListHubDevices lists a hub's devices in folded device-ID order after
// after, as the real stores do.
func (m *hubStore) ListHubDevices(_ context.Context, hub, after string, limit int) ([]dps.HubDevice, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []dps.HubDevice
	for _, d := range m.devices {
		if strings.EqualFold(d.Hub, hub) && dps.FoldID(d.DeviceID) > dps.FoldID(after) {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b dps.HubDevice) int { return strings.Compare(dps.FoldID(a.DeviceID), dps.FoldID(b.DeviceID)) })
	return out[:min(limit, len(out))], nil
}

func (m *hubStore) PutHubDevice(_ context.Context, d dps.HubDevice) (dps.HubDevice, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := hubStoreKey(d.Hub, d.DeviceID)
	if d.Replaces != "" && m.devices[k].ETag != d.Replaces {
		return dps.HubDevice{}, dps.Errorf(dps.KindConflict, "device %s changed", d.DeviceID)
	}
	m.seq++
	d.Replaces, d.ETag = "", `"r`+strconv.Itoa(m.seq)+`"`
	m.devices[k] = d
	return d, nil
}

func (m *hubStore) AppendMessages(_ context.Context, msgs []dps.Message) ([]dps.Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]dps.Message, len(msgs))
	for i, msg := range msgs {
		msg.Seq = int64(len(m.msgs) + 1)
		m.msgs = append(m.msgs, msg)
		out[i] = msg
	}
	return out, nil
}

func (m *hubStore) messages() []dps.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]dps.Message(nil), m.msgs...)
}

// hubConn is a connected device: it records desired notifications and
// answers direct methods with answer (nil: it has not subscribed to
// methods; returning false from answer: it never answers).
type hubConn struct {
	mu      sync.Mutex
	desired []string
	methods []string
	answer  func(name, rid string, body []byte) bool
}

func (c *hubConn) Desired(v int64, body []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.desired = append(c.desired, strconv.FormatInt(v, 10)+" "+string(body))
	return true
}

func (c *hubConn) Method(name, rid string, body []byte) bool {
	c.mu.Lock()
	c.methods = append(c.methods, name+" "+string(body))
	answer := c.answer
	c.mu.Unlock()
	if answer == nil {
		return false
	}
	answer(name, rid, body)
	return true
}

func (c *hubConn) Close(error) {}
func (c *hubConn) C2D()        {}

func (c *hubConn) setAnswer(answer func(name, rid string, body []byte) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answer = answer
}

func (c *hubConn) seen() (desired, methods []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.desired...), append([]string(nil), c.methods...)
}

// hubFixture is a built-in hub behind the HTTPS handler, with devices:
// dev-1 (sas, key1), dev-off (sas, key1, disabled), dev-x (selfSigned,
// cert), and the policies iothubowner (all rights) and registryRead.
type hubFixture struct {
	store   *hubStore
	hub     *iothub.Service
	handler *httpapi.Handler
	key1    []byte
	owner   []byte // iothubowner's key
	reader  []byte // registryRead's key
	cert    tls.Certificate
}

func randomKey() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

func selfSigned(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

func newHubFixture(t testing.TB, dpsSide http.Handler, opts ...func(*httpapi.Options)) *hubFixture {
	t.Helper()
	f := &hubFixture{store: &hubStore{CloudStore: dpstest.NewSQLite(t), devices: map[string]dps.HubDevice{}}, key1: randomKey(), owner: randomKey(), reader: randomKey(),
		cert: selfSigned(t, "dev-x")}
	b64 := base64.StdEncoding.EncodeToString
	sum := sha256.Sum256(f.cert.Certificate[0])
	for _, d := range []dps.HubDevice{
		{DeviceID: "dev-1", Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: dps.Key(b64(f.key1))}},
		{DeviceID: "dev-off", Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: dps.Key(b64(f.key1))}, Status: dps.DeviceDisabled, StatusReason: "stolen"},
		{DeviceID: "dev-x", Auth: dps.HubAuth{Type: dps.HubAuthSelfSigned, PrimaryThumbprint: strings.ToUpper(hex.EncodeToString(sum[:]))}},
	} {
		d.Hub, d.GenerationID, d.Updated = hubHost, "g-"+d.DeviceID, time.Now()
		d.Twin = json.RawMessage(`{"tags":{"model":"m1"},"properties":{"desired":{"interval":10}}}`)
		if _, err := f.store.PutHubDevice(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	f.hub = iothub.New(iothub.Options{Store: f.store, Hubs: []string{hubHost}})
	o := httpapi.Options{
		Registrar: fake(),
		Service:   dpsSide,
		Hub:       f.hub,
		HubPolicies: map[string][]access.Policy{"LOCALHOST": {
			{Name: "iothubowner", PrimaryKey: b64(f.owner), Rights: access.HubRights()},
			{Name: "registryRead", PrimaryKey: b64(f.reader), Rights: []access.Right{access.RegistryRead}},
		}},
	}
	for _, opt := range opts {
		opt(&o)
	}
	f.handler = httpapi.New(o)
	return f
}

func (f *hubFixture) deviceToken(id string, key []byte) string {
	return sas.New(hubHost+"/devices/"+id, key, "", time.Now().Add(time.Hour))
}

// cToken is the C SDK HTTP transport's form: the sr raw, skn={deviceId}.
func (f *hubFixture) cToken(id string, key []byte) string {
	sr, se := hubHost+"/devices/"+id, strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	sig := base64.StdEncoding.EncodeToString(sas.Sign(key, sr, se))
	return sas.Prefix + "sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se + "&skn=" + id
}

func (f *hubFixture) serviceToken(policy string, key []byte) string {
	return sas.New(hubHost, key, policy, time.Now().Add(time.Hour))
}

// server starts the handler on a loopback TLS server that requests (not
// requires) a client certificate, as dpsd's HTTPS port does.
func (f *hubFixture) server(t *testing.T) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(f.handler)
	ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

type hubAnswer struct {
	status int
	header http.Header
	body   string
}

// do sends a request to the hub host (the Host header; the connection
// goes to the loopback server). hdr values are set under the exact keys
// given, so header case reaches the server as written.
func do(t *testing.T, c *http.Client, ts *httptest.Server, method, path string, hdr map[string]string, body []byte) hubAnswer {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = hubHost
	for k, v := range hdr {
		req.Header[k] = []string{v}
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return hubAnswer{res.StatusCode, res.Header, string(b)}
}

// wantHubError checks an IoT Hub service-shaped error answer.
func wantHubError(t *testing.T, a hubAnswer, status int, name string) {
	t.Helper()
	var body struct{ Message, ExceptionMessage string }
	if err := json.Unmarshal([]byte(a.body), &body); err != nil {
		t.Fatalf("%d %q: %v", a.status, a.body, err)
	}
	if a.status != status || a.header.Get("iothub-errorcode") != name || !strings.HasPrefix(body.Message, "ErrorCode:"+name+";") ||
		!strings.HasPrefix(body.ExceptionMessage, "Tracking ID:"+a.header.Get("x-ms-request-id")+"-G:0-TimeStamp:") ||
		len(a.header.Get("x-ms-request-id")) != 32 {
		t.Fatalf("answer %d %s (iothub-errorcode %q, x-ms-request-id %q), want %d %s",
			a.status, a.body, a.header.Get("iothub-errorcode"), a.header.Get("x-ms-request-id"), status, name)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
}

const eventsPath = "/devices/dev-1/messages/events?api-version=2021-04-12"

func TestHubTelemetry(t *testing.T) {
	f := newHubFixture(t, nil)
	ts := f.server(t)
	c := ts.Client()

	a := do(t, c, ts, "POST", eventsPath, map[string]string{
		"Authorization":               f.deviceToken("dev-1", f.key1),
		"IoTHub-MessageId":            "m1",
		"iothub-correlationid":        "c1",
		"IOTHUB-USERID":               "u1",
		"iothub-contenttype":          "application/json",
		"Iothub-Contentencoding":      "utf-8",
		"iothub-to":                   "/devices/dev-1/messages/events",
		"IoTHub-Expiry":               "2030-01-01T00:00:00Z",
		"iothub-interface-id":         "urn:azureiot:Security:SecurityAgent:1",
		"dt-subject":                  "thermostat1",
		"iothub-app-temperatureAlert": "true",
		"IOTHUB-APP-Level":            "a/b&c=%",
		"iothub-connection-device-id": "spoofed",
	}, []byte(`{"t":21.5}`))
	if a.status != http.StatusNoContent || a.body != "" {
		t.Fatalf("telemetry: %d %q", a.status, a.body)
	}
	msgs := f.store.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages stored", len(msgs))
	}
	m := msgs[0]
	if m.Hub != hubHost || m.DeviceID != "dev-1" || m.MessageID != "m1" || m.CorrelationID != "c1" || m.UserID != "u1" ||
		m.ContentType != "application/json" || m.ContentEncoding != "utf-8" || string(m.Body) != `{"t":21.5}` {
		t.Errorf("message %+v", m)
	}
	for k, v := range map[string]string{iothub.PropTo: "/devices/dev-1/messages/events", iothub.PropExpiry: "2030-01-01T00:00:00Z",
		iothub.PropInterfaceID: "urn:azureiot:Security:SecurityAgent:1", iothub.PropSubject: "thermostat1",
		iothub.PropConnectionDeviceID: "dev-1", iothub.PropConnectionGenerationID: "g-dev-1"} {
		if m.System[k] != v {
			t.Errorf("system %s = %q, want %q", k, m.System[k], v)
		}
	}
	if len(m.Properties) != 2 || m.Properties["temperaturealert"] != "true" || m.Properties["level"] != "a/b&c=%" {
		t.Errorf("application properties %v (names lower-cased)", m.Properties)
	}

	// The C SDK's token form (raw sr, skn={deviceId}) and an empty body.
	if a := do(t, c, ts, "POST", eventsPath, map[string]string{"Authorization": f.cToken("dev-1", f.key1)}, nil); a.status != http.StatusNoContent {
		t.Fatalf("C SDK token: %d %s", a.status, a.body)
	}
	if m := f.store.messages()[1]; m.Body == nil || len(m.Body) != 0 || m.Properties != nil {
		t.Errorf("empty message %+v", m)
	}

	n := len(f.store.messages())
	for _, tt := range []struct {
		name, path, auth string
		status           int
		code             string
	}{
		{"wrong key", eventsPath, f.deviceToken("dev-1", randomKey()), 401, "IotHubUnauthorizedAccess"},
		{"no credential", eventsPath, "", 401, "IotHubUnauthorizedAccess"},
		{"another device's token", eventsPath, f.deviceToken("dev-off", f.key1), 401, "IotHubUnauthorizedAccess"},
		{"a service token", eventsPath, f.serviceToken("iothubowner", f.owner), 401, "IotHubUnauthorizedAccess"},
		{"unknown device", "/devices/nobody/messages/events", f.deviceToken("nobody", f.key1), 401, "IotHubUnauthorizedAccess"},
		{"disabled", "/devices/dev-off/messages/events", f.deviceToken("dev-off", f.key1), 403, "DeviceDisabled"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.auth != "" {
				hdr["Authorization"] = tt.auth
			}
			wantHubError(t, do(t, c, ts, "POST", tt.path, hdr, []byte("x")), tt.status, tt.code)
		})
	}
	if got := len(f.store.messages()); got != n {
		t.Errorf("refused requests stored %d messages", got-n)
	}
}

func TestHubTelemetryX509(t *testing.T) {
	f := newHubFixture(t, nil)
	ts := f.server(t)
	client := func(cert tls.Certificate) *http.Client {
		tr := ts.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
		return &http.Client{Transport: tr}
	}
	if a := do(t, client(f.cert), ts, "POST", "/devices/dev-x/messages/events", nil, []byte("x")); a.status != http.StatusNoContent {
		t.Fatalf("device certificate: %d %s", a.status, a.body)
	}
	wantHubError(t, do(t, client(selfSigned(t, "dev-x")), ts, "POST", "/devices/dev-x/messages/events", nil, []byte("x")), 401, "IotHubUnauthorizedAccess")
	wantHubError(t, do(t, client(f.cert), ts, "POST", eventsPath, nil, []byte("x")), 401, "IotHubUnauthorizedAccess")
}

func TestHubTelemetryTooLarge(t *testing.T) {
	f := newHubFixture(t, nil)
	ts := f.server(t)
	auth := map[string]string{"Authorization": f.deviceToken("dev-1", f.key1)}
	wantHubError(t, do(t, ts.Client(), ts, "POST", eventsPath, auth, bytes.Repeat([]byte("x"), iothub.DefaultMaxMessageSize+1)), 413, "MessageTooLarge")
	// At the limit with a property on top: over, as IoT Hub counts.
	auth["iothub-app-k"] = "v"
	wantHubError(t, do(t, ts.Client(), ts, "POST", eventsPath, auth, bytes.Repeat([]byte("x"), iothub.DefaultMaxMessageSize)), 413, "MessageTooLarge")
	delete(auth, "iothub-app-k")
	if a := do(t, ts.Client(), ts, "POST", eventsPath, auth, bytes.Repeat([]byte("x"), iothub.DefaultMaxMessageSize)); a.status != http.StatusNoContent {
		t.Fatalf("a message of exactly the limit: %d %s", a.status, a.body)
	}
	if n := len(f.store.messages()); n != 1 {
		t.Errorf("%d messages stored, want the one at the limit", n)
	}

	// The handler never reads more than the limit + 1 bytes of a body.
	body := &countingReader{n: 10 << 20}
	req := httptest.NewRequest("POST", "https://"+hubHost+eventsPath, body)
	req.Header.Set("Authorization", f.deviceToken("dev-1", f.key1))
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	if rec.Code != 413 || body.read > iothub.DefaultMaxMessageSize+1 {
		t.Fatalf("%d after reading %d bytes of a 10 MB body", rec.Code, body.read)
	}
}

// countingReader is an endless body that counts what was read of it.
type countingReader struct{ n, read int }

func (r *countingReader) Read(p []byte) (int, error) {
	if r.read >= r.n {
		return 0, io.EOF
	}
	n := min(len(p), r.n-r.read)
	for i := range n {
		p[i] = 'x'
	}
	r.read += n
	return n, nil
}

func TestHubTelemetryBatch(t *testing.T) {
	f := newHubFixture(t, nil)
	ts := f.server(t)
	hdr := map[string]string{"Authorization": f.deviceToken("dev-1", f.key1), "Content-Type": "application/vnd.microsoft.iothub.json; charset=utf-8"}
	b64 := base64.StdEncoding.EncodeToString
	batch := `[{"body":"` + b64([]byte("one")) + `","properties":{"iothub-app-Mixed":"v","IoTHub-MessageId":"b1"}},` +
		`{"body":"two","base64Encoded":false,"properties":{"iothub-messageid":"b2","iothub-contenttype":"text/plain"}},` +
		`{"body":""}]`
	if a := do(t, ts.Client(), ts, "POST", eventsPath, hdr, []byte(batch)); a.status != http.StatusNoContent {
		t.Fatalf("batch: %d %s", a.status, a.body)
	}
	msgs := f.store.messages()
	if len(msgs) != 3 || string(msgs[0].Body) != "one" || msgs[0].MessageID != "b1" || msgs[0].Properties["Mixed"] != "v" || len(msgs[0].Properties) != 1 ||
		string(msgs[1].Body) != "two" || msgs[1].MessageID != "b2" || msgs[1].ContentType != "text/plain" || msgs[1].Properties != nil ||
		len(msgs[2].Body) != 0 || msgs[0].System[iothub.PropConnectionDeviceID] != "dev-1" {
		t.Fatalf("stored %+v", msgs)
	}

	big := b64(bytes.Repeat([]byte("x"), 150*1024))
	for _, tt := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"one bad body", `[{"body":"` + b64([]byte("ok")) + `"},{"body":"not base64!"}]`, 400, "ArgumentInvalid"},
		{"not an array", `{"body":"eA=="}`, 400, "ArgumentInvalid"},
		{"empty", `[]`, 400, "ArgumentInvalid"},
		{"no body", `[{"properties":{}}]`, 400, "ArgumentInvalid"},
		{"number property", `[{"body":"eA==","properties":{"iothub-app-n":1}}]`, 400, "ArgumentInvalid"},
		{"over the limit in total", `[{"body":"` + big + `"},{"body":"` + big + `"}]`, 413, "MessageTooLarge"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantHubError(t, do(t, ts.Client(), ts, "POST", eventsPath, hdr, []byte(tt.body)), tt.status, tt.code)
		})
	}
	if n := len(f.store.messages()); n != 3 {
		t.Errorf("refused batches stored %d messages: all or none", n-3)
	}
}

// TestHubRouting: on the hub's host only devices, twins and messages paths
// are the hub's; DPS's device and service APIs share the host; on another
// host the hub's paths are DPS's (and unknown there).
func TestHubRouting(t *testing.T) {
	dpsService := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	f := newHubFixture(t, dpsService)
	ts := f.server(t)
	c := ts.Client()
	if a := do(t, c, ts, "PUT", "/0ne00000001/registrations/dev/register?api-version=2021-06-01", map[string]string{"Authorization": "sas"}, []byte(`{}`)); a.status != 202 {
		t.Errorf("DPS register on the hub's host: %d %s", a.status, a.body)
	}
	if a := do(t, c, ts, "GET", "/enrollments/e1", nil, nil); a.status != http.StatusTeapot {
		t.Errorf("DPS service API on the hub's host: %d %s", a.status, a.body)
	}
	for _, p := range []string{"/messages/serviceBound/filenotifications", "/twins/dev-1/modules/m1", "/devices/dev-1/unknown"} {
		a := do(t, c, ts, "GET", p, map[string]string{"Authorization": f.deviceToken("dev-1", f.key1)}, nil)
		wantHubError(t, a, 404, "NotFound")
	}
	wantHubError(t, do(t, c, ts, "GET", eventsPath, nil, nil), 405, "InvalidOperation")
	wantHubError(t, do(t, c, ts, "DELETE", "/twins/dev-1", nil, nil), 405, "InvalidOperation")
	wantHubError(t, do(t, c, ts, "GET", "/devices/dev-1/messages/devicebound/lock1", nil, nil), 405, "InvalidOperation")

	req, _ := http.NewRequest("POST", ts.URL+eventsPath, strings.NewReader("x"))
	req.Host = "dps.example.net"
	req.Header.Set("Authorization", f.deviceToken("dev-1", f.key1))
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTeapot || len(f.store.messages()) != 0 {
		t.Errorf("a hub path on another host: %d, %d messages", res.StatusCode, len(f.store.messages()))
	}
}

type twinJSON struct {
	DeviceID         string  `json:"deviceId"`
	ETag             string  `json:"etag"`
	DeviceETag       string  `json:"deviceEtag"`
	Status           string  `json:"status"`
	StatusReason     *string `json:"statusReason"`
	ConnectionState  string  `json:"connectionState"`
	LastActivityTime string  `json:"lastActivityTime"`
	AuthType         string  `json:"authenticationType"`
	X509Thumbprint   map[string]*string
	Version          int64                      `json:"version"`
	Tags             map[string]any             `json:"tags"`
	Properties       map[string]json.RawMessage `json:"properties"`
	Capabilities     *struct {
		IoTEdge bool `json:"iotEdge"`
	} `json:"capabilities"`
}

func decodeTwin(t *testing.T, a hubAnswer) twinJSON {
	t.Helper()
	if a.status != 200 {
		t.Fatalf("twin answer %d %s", a.status, a.body)
	}
	var tw twinJSON
	if err := json.Unmarshal([]byte(a.body), &tw); err != nil {
		t.Fatal(err)
	}
	if a.header.Get("Content-Type") != "application/json; charset=utf-8" || a.header.Get("ETag") != `"`+tw.ETag+`"` {
		t.Errorf("headers %v, etag %q", a.header, tw.ETag)
	}
	return tw
}

func TestHubTwins(t *testing.T) {
	f := newHubFixture(t, nil)
	ts := f.server(t)
	c := ts.Client()
	owner := map[string]string{"Authorization": f.serviceToken("iothubowner", f.owner)}

	tw := decodeTwin(t, do(t, c, ts, "GET", "/twins/dev-1?api-version=2021-04-12", owner, nil))
	var desired map[string]any
	json.Unmarshal(tw.Properties["desired"], &desired)
	if tw.DeviceID != "dev-1" || tw.ETag == "" || tw.DeviceETag == "" || tw.Status != "enabled" || tw.StatusReason != nil ||
		tw.ConnectionState != "Disconnected" || tw.LastActivityTime != "0001-01-01T00:00:00Z" || tw.AuthType != "sas" ||
		tw.X509Thumbprint == nil || tw.Version != 2 || tw.Tags["model"] != "m1" || tw.Capabilities == nil ||
		desired["interval"] != 10.0 || desired["$version"] != 1.0 || desired["$metadata"] == nil {
		t.Fatalf("twin %+v, desired %v", tw, desired)
	}
	if off := decodeTwin(t, do(t, c, ts, "GET", "/twins/dev-off", owner, nil)); off.Status != "disabled" || off.StatusReason == nil || *off.StatusReason != "stolen" {
		t.Errorf("disabled device's twin %+v", off)
	}
	if x := decodeTwin(t, do(t, c, ts, "GET", "/twins/dev-x", owner, nil)); x.AuthType != "selfSigned" || x.X509Thumbprint["primaryThumbprint"] == nil {
		t.Errorf("x509 device's twin %+v", x)
	}

	// A connected device gets the desired part of a PATCH.
	conn := &hubConn{}
	defer f.hub.Attach(iothub.Identity{Hub: hubHost, DeviceID: "dev-1", GenerationID: "g-dev-1"}, conn)()
	hdr := map[string]string{"Authorization": owner["Authorization"], "If-Match": `"` + tw.ETag + `"`, "Content-Type": "application/json; charset=utf-8"}
	tw2 := decodeTwin(t, do(t, c, ts, "PATCH", "/twins/dev-1", hdr, []byte(`{"tags":{"site":"b"},"properties":{"desired":{"interval":20}}}`)))
	if tw2.ETag == tw.ETag || tw2.DeviceETag != tw.DeviceETag || tw2.Tags["model"] != "m1" || tw2.Tags["site"] != "b" || tw2.ConnectionState != "Connected" {
		t.Fatalf("patched twin %+v", tw2)
	}
	if d, _ := conn.seen(); len(d) != 1 || d[0] != `2 {"interval":20,"$version":2}` {
		t.Fatalf("desired notifications %q", d)
	}

	// The etag read before the PATCH is stale now: 412, nothing changes.
	wantHubError(t, do(t, c, ts, "PATCH", "/twins/dev-1", hdr, []byte(`{"tags":{"site":"c"}}`)), 412, "PreconditionFailed")
	wantHubError(t, do(t, c, ts, "PUT", "/twins/dev-1", hdr, []byte(`{}`)), 412, "PreconditionFailed")
	if now := decodeTwin(t, do(t, c, ts, "GET", "/twins/dev-1", owner, nil)); now.ETag != tw2.ETag || now.Tags["site"] != "b" {
		t.Fatalf("a refused write changed the twin: %+v", now)
	}

	// PUT with the current etag (unquoted, as some clients send it) replaces.
	hdr["If-Match"] = tw2.ETag
	tw3 := decodeTwin(t, do(t, c, ts, "PUT", "/twins/dev-1", hdr, []byte(`{"tags":{"only":"this"},"properties":{"desired":{}}}`)))
	if len(tw3.Tags) != 1 || tw3.Tags["only"] != "this" {
		t.Errorf("replaced twin %+v", tw3)
	}
	if d, _ := conn.seen(); len(d) != 2 || d[1] != `3 {"$version":3}` {
		t.Errorf("desired notifications after PUT %q", d)
	}
	hdr["If-Match"] = `"*"`
	if tw4 := decodeTwin(t, do(t, c, ts, "PATCH", "/twins/dev-1", hdr, []byte(`{"tags":{"only":null}}`))); tw4.Tags != nil {
		t.Errorf("tags after deleting the last one: %v", tw4.Tags)
	}

	wantHubError(t, do(t, c, ts, "GET", "/twins/nobody", owner, nil), 404, "DeviceNotFound")
	wantHubError(t, do(t, c, ts, "PATCH", "/twins/dev-1", hdr, []byte(`{"tags":`)), 400, "IotHubFormatError")
	wantHubError(t, do(t, c, ts, "PATCH", "/twins/dev-1", hdr, []byte(`{"tags":{"a.b":1}}`)), 400, "ArgumentInvalid")
}

// TestHubServiceRights: every twin route needs ServiceConnect; a device's
// own token is no service credential.
func TestHubServiceRights(t *testing.T) {
	f := newHubFixture(t, nil)
	ts := f.server(t)
	c := ts.Client()
	reader := f.serviceToken("registryRead", f.reader)
	for _, tt := range []struct {
		name, auth string
		status     int
		code       string
	}{
		{"registryRead", reader, 401, "IotHubUnauthorizedAccess"},
		{"device token", f.deviceToken("dev-1", f.key1), 401, "IotHubUnauthorizedAccess"},
		{"C SDK device token", f.cToken("dev-1", f.key1), 401, "IotHubUnauthorizedAccess"},
		{"device key under the policy's name", sas.New(hubHost, f.key1, "iothubowner", time.Now().Add(time.Hour)), 401, "IotHubUnauthorizedAccess"},
		{"expired", sas.New(hubHost, f.owner, "iothubowner", time.Now().Add(-time.Hour)), 401, "IotHubUnauthorizedAccess"},
		{"another hub", sas.New("hub.example.net", f.owner, "iothubowner", time.Now().Add(time.Hour)), 401, "IotHubUnauthorizedAccess"},
		{"none", "", 401, "IotHubUnauthorizedAccess"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{"If-Match": "*"}
			if tt.auth != "" {
				hdr["Authorization"] = tt.auth
			}
			for _, r := range []struct{ method, path, body string }{
				{"GET", "/twins/dev-1", ""},
				{"PATCH", "/twins/dev-1", `{"tags":{"x":1}}`},
				{"PUT", "/twins/dev-1", `{}`},
				{"POST", "/twins/dev-1/methods", `{"methodName":"m"}`},
				{"GET", "/messages/events", ""},
			} {
				a := do(t, c, ts, r.method, r.path, hdr, []byte(r.body))
				wantHubError(t, a, tt.status, tt.code)
				if tt.status == 403 && !strings.Contains(a.body, "ServiceConnect") {
					t.Errorf("%s %s: the 403 does not name the right: %s", r.method, r.path, a.body)
				}
			}
		})
	}
	if tw := decodeTwin(t, do(t, c, ts, "GET", "/twins/dev-1", map[string]string{"Authorization": f.serviceToken("iothubowner", f.owner)}, nil)); tw.Tags["x"] != nil {
		t.Errorf("a refused PATCH was applied: %v", tw.Tags)
	}
}

// headerFold is the header's value, its name in any case (a recorder keeps
// the names as the handler wrote them).
func headerFold(h http.Header, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// wantMethodError checks a direct method's failure: IoT Hub's plain shape
// with the numeric code.
func wantMethodError(t *testing.T, status int, header http.Header, body string, wantStatus, code int, name string) map[string]string {
	t.Helper()
	var b struct {
		ErrorCode    int               `json:"errorCode"`
		TrackingID   string            `json:"trackingId"`
		Message      string            `json:"message"`
		Info         map[string]string `json:"info"`
		TimestampUtc string            `json:"timestampUtc"`
	}
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatalf("%d %q: %v", status, body, err)
	}
	if status != wantStatus || b.ErrorCode != code || headerFold(header, "iothub-errorcode") != name || b.TrackingID == "" ||
		b.TrackingID != header.Get("x-ms-request-id") || b.Message == "" || b.TimestampUtc == "" || b.Info == nil {
		t.Fatalf("answer %d %s (iothub-errorcode %q), want %d %d %s", status, body, headerFold(header, "iothub-errorcode"), wantStatus, code, name)
	}
	return b.Info
}

func TestHubMethods(t *testing.T) {
	f := newHubFixture(t, nil)
	ts := f.server(t)
	c := ts.Client()
	owner := map[string]string{"Authorization": f.serviceToken("iothubowner", f.owner)}
	id := iothub.Identity{Hub: hubHost, DeviceID: "dev-1", GenerationID: "g-dev-1"}

	a := do(t, c, ts, "POST", "/twins/dev-1/methods?api-version=2021-04-12", owner, []byte(`{"methodName":"reboot","payload":{"delay":1},"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0}`))
	wantMethodError(t, a.status, a.header, a.body, 404, dps.CodeDeviceNotOnline, "DeviceNotOnline")

	conn := &hubConn{}
	detach := f.hub.Attach(id, conn)
	a = do(t, c, ts, "POST", "/twins/dev-1/methods", owner, []byte(`{"methodName":"reboot","payload":{"delay":1}}`))
	wantMethodError(t, a.status, a.header, a.body, 404, dps.CodeDeviceNotOnline, "DeviceNotOnline") // not subscribed to methods

	conn.setAnswer(func(name, rid string, body []byte) bool {
		go f.hub.MethodResponse(id, rid, 201, []byte(`{"ok":true,"got":`+string(body)+`}`))
		return true
	})
	a = do(t, c, ts, "POST", "/twins/dev-1/methods", owner, []byte(`{"methodName":"reboot","payload":{"delay":1},"responseTimeoutInSeconds":10}`))
	if a.status != 200 || a.body != `{"status":201,"payload":{"ok":true,"got":{"delay":1}}}` || a.header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("invoke: %d %s %v", a.status, a.body, a.header)
	}
	a = do(t, c, ts, "POST", "/twins/dev-1/methods", owner, []byte(`{"methodName":"noPayload"}`))
	if _, m := conn.seen(); a.status != 200 || m[len(m)-1] != "noPayload null" {
		t.Fatalf("invoke without a payload: %d %s; the device saw %q", a.status, a.body, m)
	}
	detach()

	for _, body := range []string{`{"payload":1}`, `{"methodName":"m","responseTimeoutInSeconds":-1}`, `{"methodName":"m","responseTimeoutInSeconds":"30"}`} {
		a := do(t, c, ts, "POST", "/twins/dev-1/methods", owner, []byte(body))
		if a.status != 400 {
			t.Errorf("%s: %d %s, want 400", body, a.status, a.body)
		}
	}
}

// TestHubMethodTimeout: a device that never answers gets the call's
// response timeout, clamped to IoT Hub's 5–300 s (30 s when absent), then
// 504 GatewayTimeout.
func TestHubMethodTimeout(t *testing.T) {
	for _, tt := range []struct {
		timeout string
		want    time.Duration
		info    string
	}{
		{`,"responseTimeoutInSeconds":1`, 5 * time.Second, "00:00:05"},
		{`,"responseTimeoutInSeconds":7`, 7 * time.Second, "00:00:07"},
		{``, 30 * time.Second, "00:00:30"},
		{`,"responseTimeoutInSeconds":0`, 30 * time.Second, "00:00:30"},
		{`,"responseTimeoutInSeconds":3600`, 300 * time.Second, "00:05:00"},
	} {
		t.Run(tt.info, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newHubFixture(t, nil)
				conn := &hubConn{answer: func(string, string, []byte) bool { return false }}
				defer f.hub.Attach(iothub.Identity{Hub: hubHost, DeviceID: "dev-1", GenerationID: "g-dev-1"}, conn)()
				req := httptest.NewRequest("POST", "https://"+hubHost+"/twins/dev-1/methods", strings.NewReader(`{"methodName":"slow"`+tt.timeout+`}`))
				req.Header.Set("Authorization", f.serviceToken("iothubowner", f.owner))
				rec := httptest.NewRecorder()
				start := time.Now()
				f.handler.ServeHTTP(rec, req)
				if took := time.Since(start); took != tt.want {
					t.Errorf("answered after %v, want %v", took, tt.want)
				}
				info := wantMethodError(t, rec.Code, rec.Header(), rec.Body.String(), 504, dps.CodeGatewayTimeout, "GatewayTimeout")
				if info["timeout"] != tt.info {
					t.Errorf("info %v, want timeout %s", info, tt.info)
				}
			})
		})
	}
}

// FuzzHubRequest sends arbitrary requests to the hub's routes: the handler
// never panics, and every answer with a body is JSON.
func FuzzHubRequest(f *testing.F) {
	f.Add("POST", "/devices/dev-1/messages/events", "application/vnd.microsoft.iothub.json", []byte(`[{"body":"eA==","properties":{"iothub-app-a":"b"}}]`))
	f.Add("POST", "/devices/dev-1/messages/events", "", []byte("raw"))
	f.Add("PATCH", "/twins/dev-1", "application/json", []byte(`{"tags":{"a":{"b":null}},"properties":{"desired":{"x":[1,"y"]}}}`))
	f.Add("PUT", "/twins/dev-1", "", []byte(`{"properties":{"desired":{"$metadata":{},"$version":3}}}`))
	f.Add("POST", "/twins/%zz/methods", "", []byte(`{`))
	f.Add("GET", "/messages/devicebound", "", []byte(nil))
	f.Add("POST", "/devices/dev-1/messages/deviceBound", "text/plain", []byte("c2d"))
	f.Add("GET", "/devices/dev-1/messages/devicebound?iothub-messagelocktimeout=5", "", []byte(nil))
	f.Add("DELETE", "/devices/dev-1/messages/deviceBound/%22lock%22?reject", "", []byte(nil))
	f.Add("POST", "/devices/dev-1/messages/deviceBound/lock/abandon", "", []byte(nil))
	f.Add("DELETE", "/devices/dev-1/commands", "", []byte(nil))
	f.Add("PUT", "/devices/dev-2", "application/json", []byte(`{"deviceId":"dev-2","authentication":{"type":"sas","symmetricKey":{"primaryKey":""}}}`))
	f.Add("POST", "/devices", "application/json", []byte(`[{"id":"b","importMode":"create","tags":{"a":1},"properties":{"reported":{"x":null}}}]`))
	f.Add("GET", "/statistics/devices", "", []byte(nil))
	f.Add("GET", "/devices/dev-1/modules", "", []byte(nil))
	fx := newHubFixture(f, nil)
	device := fx.deviceToken("dev-1", fx.key1)
	service := fx.serviceToken("iothubowner", fx.owner)
	f.Fuzz(func(t *testing.T, method, path, contentType string, body []byte) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequest(method, "https://"+hubHost+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		lower := strings.ToLower(path)
		if strings.HasPrefix(lower, "/twins") || strings.Contains(lower, "/commands") || strings.HasPrefix(lower, "/statistics") ||
			strings.HasPrefix(lower, "/devices") && !strings.Contains(lower, "/messages") ||
			method == "POST" && strings.Contains(lower, "/devicebound") && !strings.Contains(lower, "/abandon") {
			req.Header.Set("Authorization", service)
		} else {
			req.Header.Set("Authorization", device)
		}
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("If-Match", "*")
		rec := httptest.NewRecorder()
		fx.handler.ServeHTTP(rec, req)
		_, c2d := rec.Header()["ETag"] // a C2D message: its body is the message's
		if rec.Body.Len() > 0 && !c2d && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s → %d non-JSON body %q", method, path, rec.Code, rec.Body.String())
		}
		if rec.Code < 200 || rec.Code >= 600 {
			t.Fatalf("status %d", rec.Code)
		}
	})
}
