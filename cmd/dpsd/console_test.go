package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestConsoleServed: dpsd serves the web console on its HTTPS listener by
// default (the banner names it), and the service API stays where it was;
// console.enabled: false turns it off.
func TestConsoleServed(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), "")
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := hc.Get(s.endpoint() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := get("/console/signin"); st != http.StatusOK || !strings.Contains(body, "Sign in with a shared access policy") {
		t.Fatalf("GET /console/signin = %d", st)
	}
	if st, _ := get("/console/"); st != http.StatusSeeOther {
		t.Fatalf("GET /console/ without a session = %d, want 303", st)
	}
	if st, _ := get("/enrollments/x"); st != http.StatusUnauthorized {
		t.Fatalf("the service API next to the console: %d, want 401", st)
	}
	var banner bytes.Buffer
	s.printBanner(&banner)
	if !strings.Contains(banner.String(), "Console:") || !strings.Contains(banner.String(), "/console/") {
		t.Errorf("banner:\n%s", banner.String())
	}

	off, hc2 := startServer(t, t.TempDir(), "console: { enabled: false }\n")
	resp, err := hc2.Get(off.endpoint() + "/console/signin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("console disabled: GET /console/signin = %d, want 404", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := off.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestConsoleConfig(t *testing.T) {
	hub := "linkedHubs: [{hostName: h.example.net}]\n"
	if _, err := loadConfig(writeConfig(t, hub+"console: { sessionIdle: 10s }\n"), noEnv); err == nil || !strings.Contains(err.Error(), "console.sessionIdle") {
		t.Fatalf("sessionIdle 10s: %v, want an error naming console.sessionIdle", err)
	}
	cfg, err := loadConfig(writeConfig(t, hub+"console: { sessionIdle: 2h }\n"), noEnv)
	if err != nil || cfg.Console.SessionIdle != 2*time.Hour || !cfg.Console.enabled() {
		t.Fatalf("console config %+v, %v", cfg.Console, err)
	}
}
