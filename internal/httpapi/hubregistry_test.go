package httpapi_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/sas"
)

// registryFixture is a built-in hub on a real SQLite store behind the
// HTTPS handler on a loopback TLS server, with the policies iothubowner
// and registryRead.
type registryFixture struct {
	hub    *iothub.Service
	ts     *httptest.Server
	c      *http.Client
	owner  string // iothubowner's token
	reader string // registryRead's token
}

func newRegistryFixture(t *testing.T) *registryFixture {
	t.Helper()
	owner, reader := randomKey(), randomKey()
	b64 := base64.StdEncoding.EncodeToString
	hub := iothub.New(iothub.Options{Store: dpstest.NewSQLite(t), Hubs: []string{hubHost}})
	h := httpapi.New(httpapi.Options{Registrar: fake(), Hub: hub, HubPolicies: map[string][]access.Policy{hubHost: {
		{Name: "iothubowner", PrimaryKey: b64(owner), Rights: access.HubRights()},
		{Name: "registryRead", PrimaryKey: b64(reader), Rights: []access.Right{access.RegistryRead}},
	}}})
	ts := httptest.NewTLSServer(h)
	t.Cleanup(ts.Close)
	exp := time.Now().Add(time.Hour)
	return &registryFixture{hub: hub, ts: ts, c: ts.Client(),
		owner: sas.New(hubHost, owner, "iothubowner", exp), reader: sas.New(hubHost, reader, "registryRead", exp)}
}

func (f *registryFixture) do(t *testing.T, method, path, auth string, hdr map[string]string, body string) hubAnswer {
	t.Helper()
	h := map[string]string{"Authorization": auth}
	for k, v := range hdr {
		h[k] = v
	}
	var b []byte
	if body != "" {
		b = []byte(body)
		h["Content-Type"] = "application/json; charset=utf-8"
	}
	return do(t, f.c, f.ts, method, path+"?api-version=2021-04-12", h, b)
}

// memberOrder lists an object's member names in the order they appear.
func memberOrder(t *testing.T, raw string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", raw)
	}
	var names []string
	for dec.More() {
		tok, _ := dec.Token()
		names = append(names, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return names
}

type deviceJSON struct {
	DeviceID                   string  `json:"deviceId"`
	GenerationID               string  `json:"generationId"`
	ETag                       string  `json:"etag"`
	ConnectionState            string  `json:"connectionState"`
	Status                     string  `json:"status"`
	StatusReason               *string `json:"statusReason"`
	ConnectionStateUpdatedTime string  `json:"connectionStateUpdatedTime"`
	StatusUpdatedTime          string  `json:"statusUpdatedTime"`
	LastActivityTime           string  `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int     `json:"cloudToDeviceMessageCount"`
	Authentication             struct {
		SymmetricKey   map[string]*string `json:"symmetricKey"`
		X509Thumbprint map[string]*string `json:"x509Thumbprint"`
		Type           string             `json:"type"`
	} `json:"authentication"`
	Capabilities map[string]bool `json:"capabilities"`
	DeviceScope  *string         `json:"deviceScope"`
}

func decodeDevice(t *testing.T, a hubAnswer) deviceJSON {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("answer %d %s", a.status, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	var d deviceJSON
	if err := json.Unmarshal([]byte(a.body), &d); err != nil {
		t.Fatal(err)
	}
	if got := a.header.Get("ETag"); got != `"`+d.ETag+`"` {
		t.Errorf("ETag header %q, body etag %q", got, d.ETag)
	}
	return d
}

func TestHubRegistryDevices(t *testing.T) {
	f := newRegistryFixture(t)
	// Node's Registry.create: no If-Match, empty keys mean "generate".
	create := `{"deviceId":"reg-1","status":"enabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}}`
	a := f.do(t, "PUT", "/devices/reg-1", f.owner, nil, create)
	d := decodeDevice(t, a)
	want := "deviceId,generationId,etag,connectionState,status,statusReason,connectionStateUpdatedTime,statusUpdatedTime,lastActivityTime,cloudToDeviceMessageCount,authentication,capabilities"
	if got := strings.Join(memberOrder(t, a.body), ","); got != want {
		t.Errorf("members %s\nwant    %s", got, want)
	}
	if got := strings.Join(memberOrder(t, string(mustRaw(t, a.body, "authentication"))), ","); got != "symmetricKey,x509Thumbprint,type" {
		t.Errorf("authentication members %s", got)
	}
	if d.DeviceID != "reg-1" || len(d.GenerationID) != 18 || d.ETag == "" || d.ConnectionState != "Disconnected" || d.Status != "enabled" ||
		d.StatusReason != nil || d.ConnectionStateUpdatedTime != "0001-01-01T00:00:00" || d.StatusUpdatedTime != "0001-01-01T00:00:00" ||
		d.LastActivityTime != "0001-01-01T00:00:00" || d.CloudToDeviceMessageCount != 0 || d.Authentication.Type != "sas" ||
		d.Capabilities["iotEdge"] || d.DeviceScope != nil {
		t.Errorf("created %s", a.body)
	}
	for _, k := range []string{"primaryKey", "secondaryKey"} {
		if p := d.Authentication.SymmetricKey[k]; p == nil || len(*p) != 44 {
			t.Errorf("%s not generated: %s", k, a.body)
		}
	}
	if tp := d.Authentication.X509Thumbprint; tp["primaryThumbprint"] != nil || tp["secondaryThumbprint"] != nil || len(tp) != 2 {
		t.Errorf("x509Thumbprint %v", tp)
	}

	wantHubError(t, f.do(t, "PUT", "/devices/reg-1", f.owner, nil, create), 409, "DeviceAlreadyExists")
	wantHubError(t, f.do(t, "PUT", "/devices/REG-1", f.owner, nil, `{"deviceId":"REG-1"}`), 409, "DeviceAlreadyExists")
	wantHubError(t, f.do(t, "PUT", "/devices/reg-2", f.owner, nil, `{"deviceId":"other"}`), 400, "ArgumentInvalid")
	wantHubError(t, f.do(t, "PUT", "/devices/bad%20id", f.owner, nil, `{}`), 400, "ArgumentInvalid")
	wantHubError(t, f.do(t, "PUT", "/devices/reg-2", f.owner, nil, `{"authentication":{"symmetricKey":{"primaryKey":"eA=="}}}`), 400, "ArgumentInvalid")
	wantHubError(t, f.do(t, "PUT", "/devices/reg-2", f.owner, nil, `[`), 400, "ArgumentInvalid")
	wantHubError(t, f.do(t, "GET", "/devices/REG-1", f.owner, nil, ""), 404, "DeviceNotFound")

	if g := f.do(t, "GET", "/devices/reg-1", f.reader, nil, ""); g.status != 200 || g.body != a.body {
		t.Errorf("GET = %d %s\nwant %s", g.status, g.body, a.body)
	}

	// A replace: a stale etag is refused; the current one (quoted) or *
	// replaces the whole object and keeps the generation.
	pk := *d.Authentication.SymmetricKey["primaryKey"]
	upd := `{"deviceId":"reg-1","etag":"x","status":"disabled","statusReason":"lost","authentication":{"type":"sas","symmetricKey":{"primaryKey":"` + pk + `","secondaryKey":"` + pk + `"}},"capabilities":{"iotEdge":true}}`
	wantHubError(t, f.do(t, "PUT", "/devices/reg-1", f.owner, map[string]string{"If-Match": `"stale"`}, upd), 412, "PreconditionFailed")
	wantHubError(t, f.do(t, "PUT", "/devices/nobody", f.owner, map[string]string{"If-Match": `*`}, `{"deviceId":"nobody"}`), 404, "DeviceNotFound")
	u := decodeDevice(t, f.do(t, "PUT", "/devices/reg-1", f.owner, map[string]string{"If-Match": `"` + d.ETag + `"`}, upd))
	if u.GenerationID != d.GenerationID || u.ETag == d.ETag || u.Status != "disabled" || u.StatusReason == nil || *u.StatusReason != "lost" ||
		*u.Authentication.SymmetricKey["secondaryKey"] != pk || !u.Capabilities["iotEdge"] || u.DeviceScope == nil ||
		*u.DeviceScope != "ms-azure-iot-edge://reg-1-"+d.GenerationID {
		t.Errorf("replaced %+v", u)
	}

	// Listing, statistics.
	decodeDevice(t, f.do(t, "PUT", "/devices/reg-0", f.owner, nil, `{}`))
	for _, p := range []string{"/devices", "/devices/"} {
		a := f.do(t, "GET", p, f.reader, nil, "")
		var list []deviceJSON
		if err := json.Unmarshal([]byte(a.body), &list); a.status != 200 || err != nil || len(list) != 2 || list[0].DeviceID != "reg-0" || list[1].DeviceID != "reg-1" {
			t.Errorf("GET %s: %d %s", p, a.status, a.body)
		}
	}
	a = do(t, f.c, f.ts, "GET", "/devices/?top=1&api-version=2021-04-12", map[string]string{"Authorization": f.reader}, nil)
	if var1 := strings.Count(a.body, `"deviceId"`); a.status != 200 || var1 != 1 {
		t.Errorf("top=1: %d %s", a.status, a.body)
	}
	if a := f.do(t, "GET", "/statistics/devices", f.reader, nil, ""); a.status != 200 ||
		a.body != `{"totalDeviceCount":2,"enabledDeviceCount":1,"disabledDeviceCount":1}` {
		t.Errorf("statistics: %d %s", a.status, a.body)
	}
	if a := f.do(t, "GET", "/statistics/service", f.owner, nil, ""); a.status != 200 || a.body != `{"connectedDeviceCount":0}` {
		t.Errorf("service statistics: %d %s", a.status, a.body)
	}
	detach := f.hub.Attach(iothub.Identity{Hub: hubHost, DeviceID: "reg-0"}, &hubConn{})
	c := decodeDevice(t, f.do(t, "GET", "/devices/reg-0", f.reader, nil, ""))
	if _, err := time.Parse("2006-01-02T15:04:05.0000000Z", c.ConnectionStateUpdatedTime); err != nil || c.ConnectionState != "Connected" ||
		c.LastActivityTime != c.ConnectionStateUpdatedTime {
		t.Errorf("connected device: %+v (%v)", c, err)
	}
	if a := f.do(t, "GET", "/statistics/service", f.owner, nil, ""); a.body != `{"connectedDeviceCount":1}` {
		t.Errorf("service statistics: %d %s", a.status, a.body)
	}
	detach()

	// Delete: optional If-Match, etag or *.
	wantHubError(t, f.do(t, "DELETE", "/devices/reg-1", f.owner, map[string]string{"If-Match": `"` + d.ETag + `"`}, ""), 412, "PreconditionFailed")
	if a := f.do(t, "DELETE", "/devices/reg-1", f.owner, map[string]string{"If-Match": `"` + u.ETag + `"`}, ""); a.status != 204 || a.body != "" {
		t.Errorf("delete: %d %s", a.status, a.body)
	}
	if a := f.do(t, "DELETE", "/devices/reg-0", f.owner, nil, ""); a.status != 204 {
		t.Errorf("delete without If-Match: %d %s", a.status, a.body)
	}
	wantHubError(t, f.do(t, "GET", "/devices/reg-1", f.owner, nil, ""), 404, "DeviceNotFound")
	wantHubError(t, f.do(t, "DELETE", "/devices/reg-1", f.owner, map[string]string{"If-Match": `"*"`}, ""), 404, "DeviceNotFound")
	if a := f.do(t, "GET", "/devices", f.reader, nil, ""); a.status != 200 || a.body != `[]` {
		t.Errorf("empty list: %d %s", a.status, a.body)
	}
}

func mustRaw(t *testing.T, body, member string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	return m[member]
}

func TestHubRegistryBulk(t *testing.T) {
	f := newRegistryFixture(t)
	// Node's addDevices: deviceId renamed id, importMode added; C#'s
	// AddDeviceWithTwinAsync: tags, desired and reported.
	a := f.do(t, "POST", "/devices", f.owner, nil, `[
		{"id":"b-1","importMode":"create","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}},
		{"id":"b-2","importMode":"create","status":"disabled","tags":{"site":"x"},"properties":{"desired":{"rate":5},"reported":{"fw":"1"}}}]`)
	if a.status != 200 || a.body != `{"isSuccessful":true,"errors":[],"warnings":[]}` {
		t.Fatalf("bulk create: %d %s", a.status, a.body)
	}
	tw, err := f.hub.ServiceTwin(t.Context(), hubHost, "b-2")
	if err != nil || string(tw.Twin.Tags) != `{"site":"x"}` || !strings.Contains(string(tw.Twin.Properties.Reported), `"fw":"1"`) || tw.Status != dps.DeviceDisabled {
		t.Errorf("b-2: %+v, %v", tw, err)
	}
	a = f.do(t, "POST", "/devices", f.owner, nil, `[{"id":"b-1","importMode":"create"},{"id":"b-2","importMode":"DeleteIfMatchETag","eTag":"stale"},{"id":"b-3","importMode":"createOrUpdate"}]`)
	var res struct {
		IsSuccessful bool `json:"isSuccessful"`
		Errors       []struct {
			DeviceID, ErrorCode, ErrorStatus, Operation string
			ModuleID                                    *string
		} `json:"errors"`
	}
	if err := json.Unmarshal([]byte(a.body), &res); err != nil || a.status != 200 || res.IsSuccessful || len(res.Errors) != 2 ||
		res.Errors[0].DeviceID != "b-1" || res.Errors[0].ErrorCode != "DeviceAlreadyExists" || res.Errors[0].ErrorStatus == "" ||
		res.Errors[1].DeviceID != "b-2" || res.Errors[1].ErrorCode != "PreconditionFailed" || res.Errors[1].Operation != "deleteIfMatchETag" {
		t.Errorf("bulk with failures: %d %s", a.status, a.body)
	}
	if _, err := f.hub.GetDevice(t.Context(), hubHost, "b-3"); err != nil {
		t.Errorf("the item after the failures: %v", err)
	}
	wantHubError(t, f.do(t, "POST", "/devices", f.owner, nil, `[]`), 400, "ArgumentInvalid")
	wantHubError(t, f.do(t, "POST", "/devices", f.owner, nil, `[{"id":"b-9","importMode":"merge"}]`), 400, "ArgumentInvalid")
	wantHubError(t, f.do(t, "POST", "/devices", f.owner, nil, `{"id":"b-9"}`), 400, "ArgumentInvalid")
}

func TestHubRegistryRights(t *testing.T) {
	f := newRegistryFixture(t)
	decodeDevice(t, f.do(t, "PUT", "/devices/r-1", f.owner, nil, `{}`))
	device := sas.New(hubHost+"/devices/r-1", randomKey(), "", time.Now().Add(time.Hour))
	for _, r := range []struct{ method, path, body, right string }{
		{"PUT", "/devices/r-2", `{}`, "RegistryWrite"},
		{"PUT", "/devices/r-1", `{}`, "RegistryWrite"},
		{"DELETE", "/devices/r-1", "", "RegistryWrite"},
		{"POST", "/devices", `[{"id":"r-3","importMode":"create"}]`, "RegistryWrite"},
		{"GET", "/statistics/service", "", "ServiceConnect"},
	} {
		a := f.do(t, r.method, r.path, f.reader, map[string]string{"If-Match": "*"}, r.body)
		wantHubError(t, a, 401, "IotHubUnauthorizedAccess")
		if !strings.Contains(a.body, r.right) {
			t.Errorf("%s %s: the 401 does not name %s: %s", r.method, r.path, r.right, a.body)
		}
	}
	for _, p := range []string{"/devices", "/devices/r-1", "/statistics/devices"} {
		wantHubError(t, f.do(t, "GET", p, device, nil, ""), 401, "IotHubUnauthorizedAccess")
		wantHubError(t, f.do(t, "GET", p, "", nil, ""), 401, "IotHubUnauthorizedAccess")
	}
	if st, _ := f.hub.Statistics(t.Context(), hubHost); st.Total != 1 {
		t.Errorf("refused writes changed the registry: %+v", st)
	}
	// Modules are refused in IoT Hub's shape; other methods on the
	// registry's paths are 405; a POST to /devices/{id} is no registry
	// route.
	for _, p := range []string{"/devices/r-1/modules", "/devices/r-1/modules/m1"} {
		a := f.do(t, "GET", p, f.owner, nil, "")
		wantHubError(t, a, 400, "ArgumentInvalid")
		if !strings.Contains(a.body, "odules are not supported by dps's built-in hub") {
			t.Errorf("%s: %s", p, a.body)
		}
	}
	wantHubError(t, f.do(t, "PATCH", "/devices/r-1", f.owner, nil, `{}`), 405, "InvalidOperation")
	wantHubError(t, f.do(t, "DELETE", "/devices", f.owner, nil, ``), 405, "InvalidOperation")
	wantHubError(t, f.do(t, "POST", "/statistics/devices", f.owner, nil, `{}`), 405, "InvalidOperation")
	wantHubError(t, f.do(t, "POST", "/devices/r-1", f.owner, nil, `{}`), 404, "NotFound")
}
