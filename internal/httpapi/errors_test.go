package httpapi_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/httpapi"
)

// TestErrorPathsShareOneTrackingID: every error answer — a registrar
// error, the routing fallbacks (bad path, 404, 405 on both APIs), the body
// limit (413), and the writer MQTT over WebSocket uses — carries one
// tracking ID in x-ms-request-id, the body's trackingId and the log line,
// and its code agrees with its status.
func TestErrorPathsShareOneTrackingID(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc := httpapi.NewService(httpapi.ServiceOptions{Logger: log})
	device := httpapi.New(httpapi.Options{Registrar: fake(), Logger: log})
	withService := httpapi.New(httpapi.Options{Registrar: fake(), Logger: log, Service: svc})
	big := `{"payload":"` + strings.Repeat("x", httpapi.MaxBody) + `"}`
	for _, tt := range []struct {
		name         string
		h            http.Handler
		method, path string
		body         string
		status, code int
	}{
		{"unauthorized", device, "PUT", "/0ne00000001/registrations/dev/register", "{}", 401, dps.CodeUnauthorized},
		{"lookup not found", device, "POST", "/0ne00000001/registrations/dev", "{}", 404, dps.CodeNotFound},
		{"no route", device, "GET", "/nothing/here", "", 404, dps.CodeNoSuchEndpoint},
		{"device 405", device, "GET", "/0ne00000001/registrations/dev/register", "", 405, dps.CodeMethodNotAllowed},
		{"body limit", device, "PUT", "/0ne00000001/registrations/dev/register", big, 413, dps.CodeTooLarge},
		{"service 404", withService, "GET", "/nothing", "", 404, dps.CodeNoSuchEndpoint},
		{"service 405", withService, "PATCH", "/enrollments/e1", "", 405, dps.CodeMethodNotAllowed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logs.Reset()
			req := httptest.NewRequest(tt.method, "https://dps.example"+tt.path, strings.NewReader(tt.body))
			if tt.name == "body limit" {
				req.Header.Set("Authorization", "SharedAccessSignature sr=x")
			}
			w := httptest.NewRecorder()
			tt.h.ServeHTTP(w, req)
			checkError(t, w, &logs, tt.status, tt.code)
		})
	}
	t.Run("WriteError", func(t *testing.T) {
		logs.Reset()
		w := httptest.NewRecorder()
		device.WriteError(w, httptest.NewRequest("GET", "https://dps.example/$iothub/websocket", nil), dps.Errorf(dps.KindThrottled, "later"))
		checkError(t, w, &logs, 429, dps.CodeThrottled)
	})
}

func checkError(t *testing.T, w *httptest.ResponseRecorder, logs *bytes.Buffer, status, code int) {
	t.Helper()
	var body struct {
		ErrorCode  int    `json:"errorCode"`
		TrackingID string `json:"trackingId"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	if w.Code != status || body.ErrorCode != code || w.Header().Get("x-ms-error-code") != strconv.Itoa(code) {
		t.Errorf("answer %d %s (x-ms-error-code %q), want %d with code %d", w.Code, w.Body, w.Header().Get("x-ms-error-code"), status, code)
	}
	id := w.Header().Get("x-ms-request-id")
	if id == "" || body.TrackingID != id || len(w.Header().Values("x-ms-request-id")) != 1 {
		t.Errorf("x-ms-request-id %q, body trackingId %q: want one ID in both", w.Header().Values("x-ms-request-id"), body.TrackingID)
	}
	var logged []string
	sc := bufio.NewScanner(logs)
	for sc.Scan() {
		var line struct {
			Msg       string `json:"msg"`
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "request failed" {
			logged = append(logged, line.RequestID)
		}
	}
	if len(logged) != 1 || logged[0] != id {
		t.Errorf("logged request IDs %q, want exactly [%q]", logged, id)
	}
}
