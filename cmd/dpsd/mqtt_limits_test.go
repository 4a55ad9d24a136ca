package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/pgtest"
	"github.com/opendps/dps/internal/wire"
)

// TestMQTTSurvivesDescriptorExhaustion: dpsd runs as a child process under
// a low RLIMIT_NOFILE (soft and hard, so the Go runtime cannot raise it),
// set by a shell wrapper.
//   - Its default MaxConnections is three quarters of that limit, so a flood
//     of idle TCP connections to the MQTT port (no credential needed) is
//     refused by the connection limit before the process runs out of file
//     descriptors (with 100000, the flood exhausted them).
//   - Descriptors exhausted all the same, by idle connections to the HTTPS
//     port, make MQTT accepts fail; they are retried, and once the flood
//     ends devices register over MQTT again.
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
	// register registers the device over MQTT, retrying for up to 15 s:
	// right after a flood ends dpsd may not have seen all of its
	// connections close yet, and refuses (resets) a new one while its
	// count is still at the limit, as a device that retries would see.
	register := func(when string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		for {
			res, err := dev.Register(ctx, "flood-dev", device.SymmetricKey(e.Attestation.SymmetricKey.PrimaryKey), nil)
			if err == nil && res.Status != "assigned" {
				err = fmt.Errorf("status %s", res.Status)
			}
			if err == nil {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("register over MQTT %s (retried for 15 s): %v", when, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	flood := func(addr string, n int) (closeAll func()) {
		var conns []net.Conn
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("flood: %v", err)
			}
			conns = append(conns, c)
		}
		return func() {
			for _, c := range conns {
				c.Close()
			}
		}
	}
	register("before the floods")

	end := flood(p.MQTT, 2*limit)
	time.Sleep(500 * time.Millisecond) // dpsd accepts and refuses what is over its limit
	end()
	logs := p.Logs()
	if !strings.Contains(logs, "mqtt connections refused: MaxConnections are open") || !strings.Contains(logs, fmt.Sprintf("max_connections=%d", limit*3/4)) {
		t.Errorf("the MQTT flood was not refused by a connection limit of %d:\n%s", limit*3/4, logs)
	}
	if strings.Contains(logs, "too many open files") {
		t.Fatalf("the MQTT flood exhausted dpsd's descriptors before its connection limit:\n%s", logs)
	}
	register("after the MQTT flood")

	end = flood(p.HTTPS, 2*limit)
	endMQTT := flood(p.MQTT, 4) // queued by the kernel; dpsd cannot accept them
	time.Sleep(500 * time.Millisecond)
	end()
	endMQTT()
	register("after the HTTPS flood")
	accept := regexp.MustCompile(`mqtt accept failed; retrying.*too many open files`)
	if !accept.MatchString(p.Logs()) {
		t.Fatalf("the HTTPS flood never made an MQTT accept fail for lack of descriptors; the test proved nothing:\n%s", p.Logs())
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
	// The database stays down for 10 s; every CONNECT meanwhile, on both
	// transports, is refused as retryable.
	for stopped := time.Now(); time.Since(stopped) < 10*time.Second; time.Sleep(time.Second) {
		for name, c := range clients {
			if code := refusal(c, key); code != 3 {
				t.Fatalf("%s %s into the outage: CONNACK %d, want 3 (server unavailable)", name, time.Since(stopped).Round(time.Second), code)
			}
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
