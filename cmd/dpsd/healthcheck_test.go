package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestHealthcheck: dpsd --healthcheck asks the configured admin listener
// for /readyz and succeeds only on a 200; a listener on every address is
// asked on 127.0.0.1 (also one on ::, which takes IPv4: a container may
// have no ::1).
func TestHealthcheck(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	var paths atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths.Store(r.URL.Path)
		w.WriteHeader(int(status.Load()))
		w.Write([]byte("storage does not take writes\n"))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	check := func(admin string) (string, error) {
		var out bytes.Buffer
		env := func(k string) string {
			if k == "DPSD_LISTEN_ADMIN" {
				return admin
			}
			return ""
		}
		err := run(context.Background(), []string{"--healthcheck"}, env, &out, &out)
		return out.String(), err
	}
	for _, admin := range []string{"127.0.0.1:" + port, ":" + port, "0.0.0.0:" + port, "[::]:" + port} {
		out, err := check(admin)
		if err != nil || !strings.HasPrefix(out, "ready (http://127.0.0.1:"+port+"/readyz)") {
			t.Errorf("admin %s: %q, %v; want ready", admin, out, err)
		}
	}
	if p, _ := paths.Load().(string); p != "/readyz" {
		t.Errorf("asked %q, want /readyz", p)
	}
	status.Store(http.StatusServiceUnavailable)
	if _, err := check("127.0.0.1:" + port); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "storage does not take writes") {
		t.Errorf("503: err = %v, want the status and the body", err)
	}
	srv.Close()
	if _, err := check("127.0.0.1:" + port); err == nil {
		t.Error("no listener: want an error")
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--healthcheck", "--config", writeConfig(t, "listen: { admin: \"\" }\n")}, noEnv, &out, &out); err == nil || !strings.Contains(err.Error(), "listen.admin is empty") {
		t.Errorf("no admin listener configured: %v", err)
	}
}
