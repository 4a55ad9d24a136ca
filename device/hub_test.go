package device_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/wire"
)

// hubEnv is a dpsd process with its built-in hub localhost, and what a
// test needs to provision devices and act as the hub's service.
type hubEnv struct {
	p       *dpstest.Process
	tls     *tls.Config
	hc      *http.Client
	svc     *client.Client // DPS service API
	hub     *client.Client // the hub's iothubowner policy
	hubBase string         // https://localhost:{port}: the hub by its name
}

func startHub(t *testing.T) *hubEnv {
	t.Helper()
	dir := t.TempDir()
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf("dataDir: %q\nlisten: { https: \"127.0.0.1:0\", mqtt: \"127.0.0.1:0\", admin: \"\" }\nretryAfterSeconds: 1\n", filepath.Join(dir, "data")))
	p := dpstest.StartDPSD(t, dpstest.BuildDPSD(t), cfg)
	pem, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	e := &hubEnv{p: p, tls: &tls.Config{RootCAs: pool}}
	e.hc = &http.Client{Transport: &http.Transport{TLSClientConfig: e.tls}, Timeout: 30 * time.Second}
	_, port, _ := net.SplitHostPort(p.HTTPS)
	e.hubBase = "https://localhost:" + port
	if e.svc, err = client.FromConnectionString(p.ConnectionString); err != nil {
		t.Fatal(err)
	}
	e.svc.Endpoint, e.svc.HTTP = "https://"+p.HTTPS, e.hc
	if e.hub, err = client.FromConnectionString(p.HubConnectionString); err != nil {
		t.Fatalf("hub connection string %q: %v", p.HubConnectionString, err)
	}
	e.hub.Endpoint, e.hub.HTTP = e.hubBase, e.hc
	return e
}

// service calls the hub's service API with the iothubowner policy.
func (e *hubEnv) service(t *testing.T, method, path, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.hubBase+path+"?api-version=2021-04-12", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", sas.New(e.hub.HostName, e.hub.Key, e.hub.KeyName, time.Now().Add(time.Hour)))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// provision enrolls id with a symmetric key and the initial twin and
// registers it; it returns the device key.
func (e *hubEnv) provision(t *testing.T, ctx context.Context, id, initialTwin string) string {
	t.Helper()
	en, err := e.svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: id, Attestation: &wire.AttestationMechanism{Type: "symmetricKey"},
		InitialTwin: json.RawMessage(initialTwin)}, "")
	if err != nil {
		t.Fatal(err)
	}
	key := en.Attestation.SymmetricKey.PrimaryKey
	c := &device.Client{Endpoint: "https://" + e.p.HTTPS, IDScope: e.p.Scope, HTTPClient: e.hc, PollInterval: 50 * time.Millisecond}
	res, err := c.Register(ctx, id, device.SymmetricKey(key), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rs := res.RegistrationState; res.Status != "assigned" || rs.AssignedHub != "localhost" || rs.DeviceID != id {
		t.Fatalf("registration: %s %+v", res.Status, rs)
	}
	return key
}

func (e *hubEnv) options(id string, cred device.Credential, ws bool) device.HubOptions {
	addr := e.p.MQTT
	if ws {
		addr = e.p.HTTPS
	}
	return device.HubOptions{Host: "localhost", DeviceID: id, Credential: cred, Address: addr, WebSocket: ws, TLS: e.tls}
}

// wait receives one value or fails the test after 10 s.
func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s", what)
		var zero T
		return zero
	}
}

// TestHub: a device provisioned to the built-in hub connects with its key
// (MQTT and MQTT over WebSocket), reads the initial twin of its
// enrollment, reports properties, sends telemetry the event log shows,
// and receives desired patches, direct-method calls and C2D messages the
// service sends.
func TestHub(t *testing.T) {
	e := startHub(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	key := e.provision(t, ctx, "hub-1", `{"tags":{"site":"lab"},"properties":{"desired":{"interval":30}}}`)

	wantInterval := 30 // the enrollment's, then what the previous run set
	for _, ws := range []bool{false, true} {
		t.Run(map[bool]string{false: "mqtt", true: "mqttws"}[ws], func(t *testing.T) {
			h, err := device.ConnectHub(ctx, e.options("hub-1", device.SymmetricKey(key), ws))
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			tw, err := h.Twin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var desired struct {
				Interval int   `json:"interval"`
				Version  int64 `json:"$version"`
			}
			if err := json.Unmarshal(tw.Desired, &desired); err != nil || desired.Interval != wantInterval || desired.Version < 1 {
				t.Errorf("twin desired = %s (%v), want interval %d", tw.Desired, err, wantInterval)
			}
			v1, err := h.UpdateReported(ctx, map[string]any{"fw": "1.0", "ws": ws})
			if err != nil {
				t.Fatal(err)
			}
			v2, err := h.UpdateReported(ctx, json.RawMessage(`{"fw":"1.1"}`))
			if err != nil || v2 <= v1 {
				t.Fatalf("second reported patch: version %d after %d, %v", v2, v1, err)
			}
			tw, err = h.Twin(ctx)
			if err != nil || !strings.Contains(string(tw.Reported), `"fw":"1.1"`) || !strings.Contains(string(tw.Reported), fmt.Sprintf(`"ws":%v`, ws)) ||
				!strings.Contains(string(tw.Reported), fmt.Sprintf(`"$version":%d`, v2)) {
				t.Errorf("twin reported = %s, %v", tw.Reported, err)
			}
			if _, err := h.UpdateReported(ctx, json.RawMessage(`[1]`)); !errors.As(err, new(*device.HubError)) {
				t.Errorf("a reported patch that is not an object: %v, want a *HubError", err)
			}

			// Desired-property patches while connected.
			patches := make(chan string, 4)
			if err := h.OnDesired(ctx, func(version int64, patch json.RawMessage) {
				patches <- fmt.Sprintf("%d %s", version, patch)
			}); err != nil {
				t.Fatal(err)
			}
			if st, body := e.service(t, http.MethodPatch, "/twins/hub-1", fmt.Sprintf(`{"properties":{"desired":{"interval":%d}}}`, map[bool]int{false: 5, true: 6}[ws]), nil); st != http.StatusOK {
				t.Fatalf("twin PATCH: %d %s", st, body)
			}
			got := wait(t, patches, "desired patch")
			wantInterval = map[bool]int{false: 5, true: 6}[ws]
			if want := fmt.Sprintf(`"interval":%d`, map[bool]int{false: 5, true: 6}[ws]); !strings.Contains(got, want) || !strings.Contains(got, `"$version"`) {
				t.Errorf("desired patch = %s, want %s", got, want)
			}

			// Direct methods: the handler's status and response reach the caller.
			calls := make(chan string, 1)
			if err := h.OnMethod(ctx, func(name string, payload json.RawMessage) (int, any) {
				calls <- name + " " + string(payload)
				tw, err := h.Twin(ctx) // a handler may call the hub
				return 200, map[string]any{"ok": err == nil && tw != nil}
			}); err != nil {
				t.Fatal(err)
			}
			st, body := e.service(t, http.MethodPost, "/twins/hub-1/methods", `{"methodName":"reboot","payload":{"delay":1},"responseTimeoutInSeconds":10}`, nil)
			if st != http.StatusOK || !strings.Contains(body, `"status":200`) || !strings.Contains(body, `"payload":{"ok":true}`) {
				t.Errorf("method call: %d %s", st, body)
			}
			if got := wait(t, calls, "method call"); got != `reboot {"delay":1}` {
				t.Errorf("method handler got %q", got)
			}

			// Cloud-to-device messages.
			msgs := make(chan device.CloudMessage, 1)
			if err := h.OnMessage(ctx, func(m device.CloudMessage) { msgs <- m }); err != nil {
				t.Fatal(err)
			}
			if st, body := e.service(t, http.MethodPost, "/devices/hub-1/messages/deviceBound", `{"cmd":"blink"}`,
				map[string]string{"iothub-messageid": "c2d-1", "iothub-app-color": "red & blue"}); st != http.StatusNoContent {
				t.Fatalf("C2D send: %d %s", st, body)
			}
			m := wait(t, msgs, "C2D message")
			if string(m.Body) != `{"cmd":"blink"}` || m.MessageID != "c2d-1" || m.Properties["color"] != "red & blue" || m.To != "/devices/hub-1/messages/devicebound" {
				t.Errorf("C2D message = %+v", m)
			}

			// Telemetry: acknowledged once in the event log, properties decoded there.
			mid := fmt.Sprintf("t-%v", ws)
			if err := h.Send(ctx, []byte(`{"t":21}`), map[string]string{"alert": "a&b=c %41/100%", "$.mid": mid, "$.ct": "application/json"}); err != nil {
				t.Fatal(err)
			}
			page, err := e.hub.HubEvents(ctx, "1", 100, 0)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, ev := range page.Messages {
				if ev.MessageID != nil && *ev.MessageID == mid {
					found = true
					if ev.DeviceID != "hub-1" || string(ev.Body) != `{"t":21}` || ev.Properties["alert"] != "a&b=c %41/100%" || ev.ContentType == nil || *ev.ContentType != "application/json" {
						t.Errorf("event = %+v", ev)
					}
				}
			}
			if !found {
				t.Errorf("message %s not in the event log: %+v", mid, page.Messages)
			}
		})
	}

	t.Run("wrong-key", func(t *testing.T) {
		_, err := device.ConnectHub(ctx, e.options("hub-1", device.SymmetricKey(dpstest.Key(32)), false))
		var refused *device.ConnectRefusedError
		if !errors.As(err, &refused) || refused.Code != 5 {
			t.Errorf("wrong key: %v, want CONNACK 5", err)
		}
	})

	t.Run("takeover", func(t *testing.T) {
		first, err := device.ConnectHub(ctx, e.options("hub-1", device.SymmetricKey(key), false))
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		second, err := device.ConnectHub(ctx, e.options("hub-1", device.SymmetricKey(key), true))
		if err != nil {
			t.Fatal(err)
		}
		defer second.Close()
		wait(t, first.Done(), "end of the first connection")
		if first.Err() == nil {
			t.Error("Err of a connection the hub closed is nil")
		}
		if _, err := first.Twin(ctx); !errors.Is(err, device.ErrHubClosed) {
			t.Errorf("Twin on the closed connection: %v, want ErrHubClosed", err)
		}
		if _, err := second.Twin(ctx); err != nil {
			t.Errorf("Twin on the new connection: %v", err)
		}
		second.Close()
		if err := second.Err(); err != nil {
			t.Errorf("Err after Close = %v, want nil", err)
		}
	})

	t.Run("x509", func(t *testing.T) {
		cert := dpstest.SelfSigned(t, "hub-x509")
		if _, err := e.svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "hub-x509", Attestation: &wire.AttestationMechanism{Type: "x509",
			X509: &wire.X509Attestation{ClientCertificates: &wire.X509Certificates{Primary: &wire.X509CertificateWithInfo{Certificate: cert.PEM()}}}},
			InitialTwin: json.RawMessage(`{"properties":{"desired":{"mode":"x509"}}}`)}, ""); err != nil {
			t.Fatal(err)
		}
		tc := e.tls.Clone()
		tc.Certificates = []tls.Certificate{cert.TLS()}
		c := &device.Client{Endpoint: "https://" + e.p.HTTPS, IDScope: e.p.Scope, Transport: "mqtt", MQTTAddress: e.p.MQTT, TLSConfig: tc, PollInterval: 50 * time.Millisecond}
		if res, err := c.Register(ctx, "hub-x509", nil, nil); err != nil || res.Status != "assigned" {
			t.Fatalf("register: %+v %v", res, err)
		}
		h, err := device.ConnectHub(ctx, e.options("hub-x509", device.Certificate(cert.TLS()), false))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if tw, err := h.Twin(ctx); err != nil || !strings.Contains(string(tw.Desired), `"mode":"x509"`) {
			t.Errorf("twin: %+v %v", tw, err)
		}
		other := dpstest.SelfSigned(t, "hub-x509")
		if _, err := device.ConnectHub(ctx, e.options("hub-x509", device.Certificate(other.TLS()), false)); !errors.As(err, new(*device.ConnectRefusedError)) {
			t.Errorf("another certificate: %v, want a refusal", err)
		}
	})
}
