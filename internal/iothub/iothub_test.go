package iothub_test

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/store/sqlite"
	"github.com/opendps/dps/internal/twin"
)

const hub = "hub.example.test"

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// fixture is a hub on a real SQLite store with a device "dev-1" provisioned
// as DPS provisions a symmetric-key device.
type fixture struct {
	st  *sqlite.DB
	hub *iothub.Service
	now time.Time
	key []byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{st: dpstest.NewSQLite(t), now: t0, key: []byte("0123456789abcdef0123456789abcdef")}
	f.hub = iothub.New(iothub.Options{Store: f.st, Hubs: []string{hub}, Now: func() time.Time { return f.now }})
	f.put(t, dps.HubDevice{Hub: hub, DeviceID: "dev-1", GenerationID: "638000000000000001",
		Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: dps.Key(base64.StdEncoding.EncodeToString(f.key)), SecondaryKey: dps.Key(base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210")))},
		Twin: json.RawMessage(`{"tags":{"site":"a"},"properties":{"desired":{"interval":30}}}`)})
	return f
}

func (f *fixture) put(t *testing.T, d dps.HubDevice) dps.HubDevice {
	t.Helper()
	if d.LiveTwin == nil {
		tw, err := twin.New(d.Twin, f.now)
		if err != nil {
			t.Fatal(err)
		}
		d.LiveTwin, _ = json.Marshal(tw)
	}
	d, err := f.st.PutHubDevice(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// token signs a device SAS token as the Node SDK does (sr with %2F).
func token(key []byte, resource string, expiry time.Time) string {
	sr := url.QueryEscape(resource)
	se := fmt.Sprint(expiry.Unix())
	sig := base64.StdEncoding.EncodeToString(sas.Sign(key, sr, se))
	return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se
}

func (f *fixture) connect(t *testing.T) iothub.Identity {
	t.Helper()
	id, err := f.hub.Authenticate(context.Background(), hub, "dev-1", dps.Credential{SAS: token(f.key, hub+"/devices/dev-1", f.now.Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestHubNames(t *testing.T) {
	s := iothub.New(iothub.Options{Hubs: []string{"Localhost", "127.0.0.2", "::1"}})
	for host, want := range map[string]string{"localhost": "Localhost", "LOCALHOST:8443": "Localhost", "127.0.0.2:443": "127.0.0.2", "[::1]:443": "::1", "::1": "::1"} {
		if got, ok := s.Hub(host); !ok || got != want {
			t.Errorf("Hub(%q) = %q, %v; want %q", host, got, ok, want)
		}
	}
	for _, host := range []string{"", "hub-a", "127.0.0.3", "localhost.evil"} {
		if got, ok := s.Hub(host); ok {
			t.Errorf("Hub(%q) = %q; want none", host, got)
		}
	}
}

func TestAuthenticateSAS(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	exp := f.now.Add(time.Hour)
	id, err := f.hub.Authenticate(ctx, hub, "dev-1", dps.Credential{SAS: token(f.key, hub+"/devices/dev-1", exp)})
	if err != nil {
		t.Fatal(err)
	}
	if id.Hub != hub || id.DeviceID != "dev-1" || id.Method != "sas" || !id.Expires.Equal(exp) || id.GenerationID != "638000000000000001" {
		t.Errorf("identity = %+v", id)
	}
	// The secondary key works too; the C SDK's raw sr as well.
	second := []byte("fedcba9876543210fedcba9876543210")
	if _, err := f.hub.Authenticate(ctx, hub, "dev-1", dps.Credential{SAS: token(second, hub+"/devices/dev-1", exp)}); err != nil {
		t.Errorf("secondary key: %v", err)
	}
	se := fmt.Sprint(exp.Unix())
	raw := "SharedAccessSignature sr=" + hub + "/devices/dev-1&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sas.Sign(f.key, hub+"/devices/dev-1", se))) + "&se=" + se
	if _, err := f.hub.Authenticate(ctx, hub, "dev-1", dps.Credential{SAS: raw}); err != nil {
		t.Errorf("raw sr: %v", err)
	}

	for name, cred := range map[string]dps.Credential{
		"wrong key":          {SAS: token([]byte("another key of thirty-two bytes!"), hub+"/devices/dev-1", exp)},
		"expired":            {SAS: token(f.key, hub+"/devices/dev-1", f.now.Add(-6*time.Minute))},
		"other device scope": {SAS: token(f.key, hub+"/devices/dev-2", exp)},
		"other hub scope":    {SAS: token(f.key, "other.example.test/devices/dev-1", exp)},
		"no credential":      {},
		// A symmetric-key identity does not take a certificate.
		"certificate": {Certificates: []*x509.Certificate{dpstest.SelfSigned(t, "dev-1").Cert}},
	} {
		_, err := f.hub.Authenticate(ctx, hub, "dev-1", cred)
		if dps.KindOf(err) != dps.KindUnauthorized {
			t.Errorf("%s: err = %v, want unauthorized", name, err)
		}
	}
	// Within the clock skew an expired token still passes.
	if _, err := f.hub.Authenticate(ctx, hub, "dev-1", dps.Credential{SAS: token(f.key, hub+"/devices/dev-1", f.now.Add(-4*time.Minute))}); err != nil {
		t.Errorf("token within the skew: %v", err)
	}
	for _, dev := range []string{"dev-2", "DEV-1"} { // unknown; IDs are case-sensitive
		if _, err := f.hub.Authenticate(ctx, hub, dev, dps.Credential{SAS: token(f.key, hub+"/devices/"+dev, exp)}); dps.KindOf(err) != dps.KindUnauthorized {
			t.Errorf("device %s: err = %v, want unauthorized", dev, err)
		}
	}
}

func TestAuthenticateDisabled(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	d, err := f.st.HubDevice(ctx, hub, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	d.Status, d.StatusReason = dps.DeviceDisabled, "stolen"
	f.put(t, d)
	_, err = f.hub.Authenticate(ctx, hub, "dev-1", dps.Credential{SAS: token(f.key, hub+"/devices/dev-1", f.now.Add(time.Hour))})
	if e := dps.AsError(err); e.Kind != dps.KindForbidden || e.Code != dps.CodeDeviceDisabled {
		t.Errorf("disabled device with its key: err = %v, want forbidden 403012", err)
	}
	// Without the key a stranger learns nothing about the device.
	_, err = f.hub.Authenticate(ctx, hub, "dev-1", dps.Credential{SAS: token([]byte("another key of thirty-two bytes!"), hub+"/devices/dev-1", f.now.Add(time.Hour))})
	if dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("disabled device, wrong key: err = %v, want unauthorized", err)
	}
}

func TestAuthenticateCertificate(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cert := dpstest.SelfSigned(t, "x509-dev", dpstest.Validity(t0.Add(-time.Hour), t0.Add(24*time.Hour)))
	other := dpstest.SelfSigned(t, "x509-dev", dpstest.Validity(t0.Add(-time.Hour), t0.Add(24*time.Hour)))
	s256 := sha256.Sum256(cert.Cert.Raw)
	s1 := sha1.Sum(cert.Cert.Raw)
	for name, thumb := range map[string]string{"sha256": hex.EncodeToString(s256[:]), "SHA256 upper": strings.ToUpper(hex.EncodeToString(s256[:])), "sha1": hex.EncodeToString(s1[:])} {
		f.put(t, dps.HubDevice{Hub: hub, DeviceID: "x509-dev", GenerationID: "1", Auth: dps.HubAuth{Type: dps.HubAuthSelfSigned, PrimaryThumbprint: "00", SecondaryThumbprint: thumb}})
		id, err := f.hub.Authenticate(ctx, hub, "x509-dev", dps.Credential{Certificates: []*x509.Certificate{cert.Cert}})
		if err != nil || id.Method != "x509" || !id.Expires.IsZero() {
			t.Errorf("%s thumbprint: %+v, %v", name, id, err)
		}
		if _, err := f.hub.Authenticate(ctx, hub, "x509-dev", dps.Credential{Certificates: []*x509.Certificate{other.Cert}}); dps.KindOf(err) != dps.KindUnauthorized {
			t.Errorf("%s: another certificate: err = %v, want unauthorized", name, err)
		}
	}
	// Out of its validity the right certificate is refused.
	f.now = t0.Add(48 * time.Hour)
	if _, err := f.hub.Authenticate(ctx, hub, "x509-dev", dps.Credential{Certificates: []*x509.Certificate{cert.Cert}}); dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("expired certificate: err = %v, want unauthorized", err)
	}
	// A token for a certificate identity is refused.
	f.now = t0
	if _, err := f.hub.Authenticate(ctx, hub, "x509-dev", dps.Credential{SAS: token(f.key, hub+"/devices/x509-dev", f.now.Add(time.Hour))}); dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("token for a certificate identity: err = %v, want unauthorized", err)
	}
}

func TestTwinReadAndReport(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.connect(t)
	doc, err := f.hub.Twin(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"desired":{"interval":30,"$version":1},"reported":{"$version":1}}`; string(doc) != want {
		t.Errorf("twin = %s, want %s", doc, want)
	}
	v, err := f.hub.PatchReported(ctx, id, []byte(`{"temp":21.5,"fw":{"v":"1.0"}}`))
	if err != nil || v != 2 {
		t.Fatalf("PatchReported = %d, %v; want 2", v, err)
	}
	if v, err = f.hub.PatchReported(ctx, id, []byte(`{"fw":null}`)); err != nil || v != 3 {
		t.Fatalf("PatchReported = %d, %v; want 3", v, err)
	}
	doc, _ = f.hub.Twin(ctx, id)
	if want := `{"desired":{"interval":30,"$version":1},"reported":{"temp":21.5,"$version":3}}`; string(doc) != want {
		t.Errorf("twin = %s, want %s", doc, want)
	}
	for _, bad := range []string{`not json`, `{"$version":4}`, `[1]`} {
		if _, err := f.hub.PatchReported(ctx, id, []byte(bad)); dps.KindOf(err) != dps.KindInvalid {
			t.Errorf("patch %s: err = %v, want invalid", bad, err)
		}
	}
	doc, _ = f.hub.Twin(ctx, id)
	if !strings.Contains(string(doc), `"$version":3}}`) {
		t.Errorf("a refused patch changed the twin: %s", doc)
	}
	// The identity deleted and created again (another generation): the old
	// connection's identity no longer reaches it.
	f.put(t, dps.HubDevice{Hub: hub, DeviceID: "dev-1", GenerationID: "638000000000000002", Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: dps.Key(base64.StdEncoding.EncodeToString(f.key))}})
	if _, err := f.hub.Twin(ctx, id); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("twin of another generation: err = %v, want not found", err)
	}
	if _, err := f.hub.PatchReported(ctx, id, []byte(`{"a":1}`)); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("patch of another generation: err = %v, want not found", err)
	}
}

// racingStore makes another write of the device win once between the
// hub's read and its write.
type racingStore struct {
	iothub.Store
	once sync.Once
	race func()
}

func (r *racingStore) PutHubDevice(ctx context.Context, d dps.HubDevice) (dps.HubDevice, error) {
	r.once.Do(r.race)
	return r.Store.PutHubDevice(ctx, d)
}

func TestConcurrentWritesAreNotLost(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.connect(t)
	other := iothub.New(iothub.Options{Store: f.st, Hubs: []string{hub}, Now: func() time.Time { return f.now }})
	rs := &racingStore{Store: f.st, race: func() {
		if _, err := other.PatchDesired(ctx, hub, "dev-1", []byte(`{"mode":"eco"}`)); err != nil {
			t.Error(err)
		}
	}}
	h := iothub.New(iothub.Options{Store: rs, Hubs: []string{hub}, Now: func() time.Time { return f.now }})
	if v, err := h.PatchReported(ctx, id, []byte(`{"temp":20}`)); err != nil || v != 2 {
		t.Fatalf("PatchReported = %d, %v", v, err)
	}
	doc, _ := f.hub.Twin(ctx, id)
	if want := `{"desired":{"interval":30,"mode":"eco","$version":2},"reported":{"temp":20,"$version":2}}`; string(doc) != want {
		t.Errorf("twin = %s, want %s", doc, want)
	}
}

// conn is a fake transport connection.
type conn struct {
	mu        sync.Mutex
	desired   []string
	methods   []string
	closed    error
	subscribe bool
	onMethod  func(rid string)
	kicks     int // C2D calls
}

func (c *conn) C2D() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kicks++
}

func (c *conn) Desired(v int64, body []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.subscribe {
		return false
	}
	c.desired = append(c.desired, fmt.Sprintf("%d %s", v, body))
	return true
}

func (c *conn) Method(name, rid string, body []byte) bool {
	c.mu.Lock()
	if !c.subscribe {
		c.mu.Unlock()
		return false
	}
	c.methods = append(c.methods, name+" "+string(body))
	cb := c.onMethod
	c.mu.Unlock()
	if cb != nil {
		go cb(rid)
	}
	return true
}

func (c *conn) Close(reason error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = reason
}

func TestDesiredReachesTheConnectedDevice(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.connect(t)
	c := &conn{subscribe: true}
	detach := f.hub.Attach(id, c)
	view, err := f.hub.PatchDesired(ctx, hub, "dev-1", []byte(`{"interval":60,"$version":9}`))
	if err != nil {
		t.Fatal(err)
	}
	if view.Version != 3 {
		t.Errorf("twin version = %d, want 3", view.Version)
	}
	if len(c.desired) != 1 || c.desired[0] != `2 {"interval":60,"$version":2}` {
		t.Errorf("notifications = %q", c.desired)
	}
	detach()
	if _, err := f.hub.PatchDesired(ctx, hub, "dev-1", []byte(`{"interval":90}`)); err != nil {
		t.Fatal(err)
	}
	if len(c.desired) != 1 {
		t.Errorf("a detached connection got %q", c.desired)
	}
	if _, err := f.hub.PatchDesired(ctx, hub, "nobody", []byte(`{}`)); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("unknown device: err = %v, want not found", err)
	}
}

func TestAttachReplacesTheEarlierConnection(t *testing.T) {
	f := newFixture(t)
	id := f.connect(t)
	first, second := &conn{subscribe: true}, &conn{subscribe: true}
	detachFirst := f.hub.Attach(id, first)
	f.hub.Attach(id, second)
	if first.closed == nil || second.closed != nil {
		t.Fatalf("closed: first %v, second %v", first.closed, second.closed)
	}
	detachFirst() // late: must not detach the second connection
	if _, ok := f.hub.Connected(hub, "dev-1"); !ok {
		t.Fatal("the second connection was detached by the first's detach")
	}
	f.hub.PatchDesired(context.Background(), hub, "dev-1", []byte(`{"a":1}`))
	if len(second.desired) != 1 || len(first.desired) != 0 {
		t.Errorf("notifications: first %q, second %q", first.desired, second.desired)
	}
}

func TestInvokeMethod(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.connect(t)
	if _, err := f.hub.InvokeMethod(ctx, hub, "dev-1", "reboot", nil, 0); !isCode(err, dps.CodeDeviceNotOnline) {
		t.Errorf("offline: err = %v, want 404103", err)
	}
	c := &conn{}
	f.hub.Attach(id, c)
	if _, err := f.hub.InvokeMethod(ctx, hub, "dev-1", "reboot", nil, 0); !isCode(err, dps.CodeDeviceNotOnline) {
		t.Errorf("not subscribed: err = %v, want 404103", err)
	}
	c.mu.Lock()
	c.subscribe = true
	c.onMethod = func(rid string) {
		// Another device answering this request is ignored.
		f.hub.MethodResponse(iothub.Identity{Hub: hub, DeviceID: "dev-2"}, rid, 500, []byte(`{"evil":true}`))
		f.hub.MethodResponse(id, rid, 200, []byte(`{"ok":true}`))
		f.hub.MethodResponse(id, rid, 201, []byte(`{"again":true}`)) // answered already: dropped
	}
	c.mu.Unlock()
	res, err := f.hub.InvokeMethod(ctx, hub, "dev-1", "reboot", json.RawMessage(`{"delay":1}`), 0)
	if err != nil || res.Status != 200 || string(res.Payload) != `{"ok":true}` {
		t.Fatalf("InvokeMethod = %+v, %v", res, err)
	}
	if len(c.methods) != 1 || c.methods[0] != `reboot {"delay":1}` {
		t.Errorf("requests = %q", c.methods)
	}
	// No payload: the device gets JSON null; a body that is not JSON comes
	// back as a string, an empty one as null.
	for body, want := range map[string]string{"": "null", "plain text": `"plain text"`} {
		c.mu.Lock()
		c.onMethod = func(rid string) { f.hub.MethodResponse(id, rid, 200, []byte(body)) }
		c.mu.Unlock()
		res, err := f.hub.InvokeMethod(ctx, hub, "dev-1", "m", nil, 0)
		if err != nil || string(res.Payload) != want {
			t.Errorf("response %q: %+v, %v; want payload %s", body, res, err, want)
		}
	}
	if got := c.methods[len(c.methods)-1]; got != "m null" {
		t.Errorf("request without payload = %q, want body null", got)
	}
	if _, err := f.hub.InvokeMethod(ctx, hub, "dev-1", "m", json.RawMessage(`{bad`), 0); dps.KindOf(err) != dps.KindInvalid {
		t.Errorf("bad payload: err = %v, want invalid", err)
	}
}

func TestInvokeMethodTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := iothub.New(iothub.Options{Hubs: []string{hub}})
		id := iothub.Identity{Hub: hub, DeviceID: "d"}
		s.Attach(id, &conn{subscribe: true})
		for _, tc := range []struct{ ask, want time.Duration }{{0, 30 * time.Second}, {time.Second, 5 * time.Second}, {time.Hour, 300 * time.Second}, {42 * time.Second, 42 * time.Second}} {
			start := time.Now()
			_, err := s.InvokeMethod(context.Background(), hub, "d", "m", nil, tc.ask)
			if e := dps.AsError(err); e.Kind != dps.KindTimeout || e.Code != dps.CodeGatewayTimeout {
				t.Errorf("timeout %s: err = %v, want 504101", tc.ask, err)
			}
			if got := time.Since(start); got != tc.want {
				t.Errorf("timeout %s waited %s, want %s", tc.ask, got, tc.want)
			}
		}
	})
}

func isCode(err error, code int) bool {
	var e *dps.Error
	return errors.As(err, &e) && e.Code == code
}

func TestSendStampsAndStores(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.connect(t)
	id.ModelID = "dtmi:com:example:Thermostat;1"
	out, err := f.hub.Send(ctx, id, dps.Message{MessageID: "m1", ContentType: "application/json", Properties: map[string]string{"alert": "1"},
		System: map[string]string{"iothub-connection-device-id": "spoofed", "to": "/devices/dev-1/messages/events"}, Body: []byte(`{"t":1}`)},
		dps.Message{Body: []byte{}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Seq != 1 || out[1].Seq != 2 || !out[0].Enqueued.Equal(t0) {
		t.Fatalf("stored = %+v", out)
	}
	got, err := f.st.Messages(ctx, hub, 0, 10)
	if err != nil || len(got) != 2 {
		t.Fatalf("log = %+v, %v", got, err)
	}
	m := got[0]
	if m.Hub != hub || m.DeviceID != "dev-1" || m.MessageID != "m1" || m.Properties["alert"] != "1" || string(m.Body) != `{"t":1}` {
		t.Errorf("message = %+v", m)
	}
	for k, want := range map[string]string{
		"iothub-connection-device-id":          "dev-1",
		"iothub-connection-auth-generation-id": "638000000000000001",
		"iothub-connection-auth-method":        `{"scope":"device","type":"sas","issuer":"iothub"}`,
		"dt-dataschema":                        "dtmi:com:example:Thermostat;1",
		"to":                                   "/devices/dev-1/messages/events",
	} {
		if m.System[k] != want {
			t.Errorf("system %s = %q, want %q", k, m.System[k], want)
		}
	}
	if got[1].Body == nil || len(got[1].Body) != 0 {
		t.Errorf("empty body = %#v, want empty, not nil", got[1].Body)
	}

	// Over the limit: refused, and the other message of the call is not
	// stored either.
	big := dps.Message{Body: make([]byte, iothub.DefaultMaxMessageSize-3), Properties: map[string]string{"ab": "cd"}}
	if _, err := f.hub.Send(ctx, id, dps.Message{Body: []byte("x")}, big); dps.KindOf(err) != dps.KindTooLarge {
		t.Errorf("oversize: err = %v, want too large", err)
	}
	if n, _ := f.st.LastMessageSeq(ctx, hub); n != 2 {
		t.Errorf("last seq = %d after a refused call, want 2", n)
	}
	big.Properties = map[string]string{"a": "b"} // exactly the limit
	if _, err := f.hub.Send(ctx, id, big); err != nil {
		t.Errorf("message of exactly the limit: %v", err)
	}
}
