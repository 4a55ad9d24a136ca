package main

import (
	"os"
	"slices"
	"testing"
)

// TestGeneratedCertificateHosts: the generated server certificate covers
// the machine's host name only when serviceHostName is unset. With it set,
// nodes that share a dataDir and differ only in host name (compose's two
// containers on one volume) ask for the same names, so neither rewrites
// the certificate the other serves.
func TestGeneratedCertificateHosts(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" || slices.Contains([]string{"localhost", "lb.example.net", "hub.example.net"}, host) {
		t.Fatalf("this machine's host name %q (%v) cannot tell the cases apart", host, err)
	}
	cfg := Config{LinkedHubs: []HubConfig{{HostName: "hub.example.net"}}}
	s := &server{cfg: cfg}
	if got := s.defaultHosts(); !slices.Contains(got, host) || !slices.Contains(got, "hub.example.net") {
		t.Errorf("without serviceHostName: %v, want the host name %s and the built-in hub", got, host)
	}
	cfg.ServiceHostName = "lb.example.net"
	s = &server{cfg: cfg}
	want := []string{"localhost", "127.0.0.1", "::1", "lb.example.net", "hub.example.net"}
	if got := s.defaultHosts(); !slices.Equal(got, want) {
		t.Errorf("with serviceHostName: %v, want %v (no host name: it differs per node)", got, want)
	}
}
