package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/registration"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestRefusedDeviceLogged: a refused register over HTTPS is one info line
// with the reason, registration ID, transport, source address and the
// tracking ID the device was answered with, and neither the SAS token's
// signature nor the payload.
func TestRefusedDeviceLogged(t *testing.T) {
	const sig = "c2lnbmF0dXJlLXRoYXQtbXVzdC1ub3QtbGVhaw%3D%3D"
	const sas = "SharedAccessSignature sr=0ne00000001%2Fregistrations%2Fdev-7&sig=" + sig + "&se=1900000000&skn=registration"
	r := fake()
	r.register = func(_ context.Context, req registration.Request) (dps.Operation, error) {
		return dps.Operation{}, &dps.Error{Kind: dps.KindUnauthorized, Code: dps.CodeUnauthorized, Message: "the SAS token does not match the enrollment's key"}
	}
	var logs lockedBuf
	srv := httptest.NewTLSServer(httpapi.New(httpapi.Options{Registrar: r, Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}))
	defer srv.Close()
	req, _ := http.NewRequest("PUT", srv.URL+"/0ne00000001/registrations/dev-7/register?api-version=2021-06-01", strings.NewReader(`{"registrationId":"dev-7","payload":{"secretThing":"p4yl0ad"}}`))
	req.Header.Set("Authorization", sas)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", resp.StatusCode)
	}
	tracking := resp.Header.Get("x-ms-request-id")
	var rec map[string]any
	for l := range strings.Lines(logs.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "device refused" {
			rec = m
		}
	}
	if rec == nil {
		t.Fatalf("no info line \"device refused\":\n%s", logs.String())
	}
	want := map[string]any{"level": "INFO", "registration_id": "dev-7", "transport": "https", "tracking_id": tracking,
		"reason": "the SAS token does not match the enrollment's key", "error_code": float64(dps.CodeUnauthorized)}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v (line %v)", k, rec[k], v, rec)
		}
	}
	if src, _ := rec["source"].(string); !strings.HasPrefix(src, "127.0.0.1:") {
		t.Errorf("source = %v, want the client's loopback address", rec["source"])
	}
	for _, secret := range []string{sig, "c2lnbmF0dXJl", "p4yl0ad"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log shows %q:\n%s", secret, logs.String())
		}
	}
}
