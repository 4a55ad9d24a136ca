package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/pgtest"
	"github.com/opendps/dps/internal/wire"
)

// TestMQTTSurvivesDescriptorExhaustion: idle TCP connections to the MQTT
// port (no credential needed) exhaust a dpsd's file descriptors; once the
// flood ends, devices register over MQTT again. dpsd runs as a child
// process under a low RLIMIT_NOFILE (soft and hard, so the Go runtime
// cannot raise it), set by a shell wrapper.
func TestMQTTSurvivesDescriptorExhaustion(t *testing.T) {
	const limit = 128
	bin := dpstest.BuildDPSD(t)
	wrapper := filepath.Join(t.TempDir(), "dpsd-limited")
	script := fmt.Sprintf("#!/bin/sh\nulimit -n %d || exit 1\nexec %q \"$@\"\n", limit, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	files, hc, tc := sharedTLS(t)
	const scope = "0ne000FL00D"
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf(`idScope: %s
dataDir: %q
listen: { https: "127.0.0.1:0", mqtt: "127.0.0.1:0", admin: "" }
tls: { certFile: %q, keyFile: %q }
retryAfterSeconds: 1
linkedHubs: [{hostName: hub-a.example.net}]
accessPolicies:
  - { name: provisioningserviceowner, primaryKey: %q, rights: [EnrollmentRead, EnrollmentWrite] }
log: { level: info }
`, scope, filepath.Join(t.TempDir(), "data"), files.ServerCert, files.ServerKey, ownerKey))
	p := dpstest.StartDPSD(t, wrapper, cfg)

	svc, err := client.FromConnectionString("HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + ownerKey)
	if err != nil {
		t.Fatal(err)
	}
	svc.Endpoint, svc.HTTP = "https://"+p.HTTPS, hc
	ctx := context.Background()
	e, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "flood-dev", Attestation: symmetric()}, "")
	if err != nil {
		t.Fatal(err)
	}
	dev := &device.Client{Endpoint: "https://" + p.HTTPS, IDScope: scope, Transport: "mqtt", MQTTAddress: p.MQTT, TLSConfig: tc, PollInterval: 20 * time.Millisecond}
	register := func() error {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		res, err := dev.Register(ctx, "flood-dev", device.SymmetricKey(e.Attestation.SymmetricKey.PrimaryKey), nil)
		if err == nil && res.Status != "assigned" {
			err = fmt.Errorf("status %s", res.Status)
		}
		return err
	}
	if err := register(); err != nil {
		t.Fatalf("register before the flood: %v", err)
	}

	var flood []net.Conn
	for range 2 * limit {
		c, err := net.Dial("tcp", p.MQTT)
		if err != nil {
			t.Fatalf("flood: %v", err)
		}
		flood = append(flood, c)
	}
	time.Sleep(500 * time.Millisecond) // dpsd accepts until it runs out of descriptors
	for _, c := range flood {
		c.Close()
	}
	if err := register(); err != nil {
		t.Fatalf("register over MQTT after the flood ended: %v", err)
	}
	if !strings.Contains(p.Logs(), "too many open files") {
		t.Fatalf("the flood never exhausted dpsd's descriptors; the test proved nothing:\n%s", p.Logs())
	}
}

// TestMQTTPostgresOutageIsRetryable: while PostgreSQL is down, MQTT devices
// (over TLS and over WebSocket) are refused with CONNACK 3 "server
// unavailable", which SDKs retry, not 5 "not authorized", which they take as
// a bad credential; when the database returns the same devices register,
// and a wrong key is refused with 5 again.
func TestMQTTPostgresOutageIsRetryable(t *testing.T) {
	cluster, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	s, _ := startServer(t, t.TempDir(), "storage: \""+cluster.DSN+"\"\n")
	e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("pg-mqtt"))
	key := device.SymmetricKey(string(e.Attestation.SymmetricKey.PrimaryKey))
	clients := map[string]*device.Client{
		"mqtt":   s.mqttClient(t),
		"mqttws": {Endpoint: s.endpoint(), IDScope: s.idScope, Transport: "mqttws", TLSConfig: s.clientTLS(t), PollInterval: 20 * time.Millisecond},
	}
	ctx := context.Background()
	refusal := func(c *device.Client, key device.Credential) byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := c.Register(ctx, "pg-mqtt", key, nil)
		var ce *device.ConnectRefusedError
		if !errors.As(err, &ce) {
			t.Fatalf("%s: err = %v, want a CONNACK refusal", c.Transport, err)
		}
		return ce.Code
	}

	if err := cluster.Pause(); err != nil {
		t.Fatal(err)
	}
	for name, c := range clients {
		if code := refusal(c, key); code != 3 {
			t.Errorf("%s during the outage: CONNACK %d, want 3 (server unavailable)", name, code)
		}
	}
	if err := cluster.Resume(); err != nil {
		t.Fatal(err)
	}
	for name, c := range clients {
		deadline := time.Now().Add(20 * time.Second)
		for {
			res, err := c.Register(ctx, "pg-mqtt", key, nil)
			if err == nil && res.Status == "assigned" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s after the outage: %+v, %v", name, res, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if code := refusal(c, device.SymmetricKey(dpstest.Key(32))); code != 5 {
			t.Errorf("%s, wrong key: CONNACK %d, want 5 (not authorized)", name, code)
		}
	}
}
