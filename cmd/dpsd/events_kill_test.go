package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/pgtest"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/wire"
)

// hubKey is the iothubowner key of the kill tests' built-in hub.
var hubKey = dpstest.Key(32)

func telemetryNodeConfig(t *testing.T, storage, certFile, keyFile string) string {
	return dpstest.WriteFile(t, "telemetry.yaml", fmt.Sprintf(`idScope: %s
dataDir: %q
storage: %q
listen: { https: "127.0.0.1:0", mqtt: "127.0.0.1:0", admin: "" }
tls: { certFile: %q, keyFile: %q }
linkedHubs:
  - hostName: localhost
    accessPolicies:
      - { name: iothubowner, primaryKey: %q, rights: [RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect] }
accessPolicies:
  - { name: provisioningserviceowner, primaryKey: %q, rights: [ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite] }
log: { level: debug }
`, killScope, filepath.Join(t.TempDir(), "data"), storage, certFile, keyFile, hubKey, ownerKey))
}

// ackedLog is what the device side was acknowledged for.
type ackedLog struct {
	mu   sync.Mutex
	ids  map[string]bool
	mqtt atomic.Int64
	http atomic.Int64
	sent atomic.Int64
}

func (a *ackedLog) add(id string, n *atomic.Int64) {
	a.mu.Lock()
	a.ids[id] = true
	a.mu.Unlock()
	n.Add(1)
}

// readEventLog reads a hub's whole event log through GET /messages/events.
func readEventLog(t *testing.T, c *client.Client) []wire.HubEvent {
	t.Helper()
	var all []wire.HubEvent
	for from := "1"; ; {
		p, err := c.HubEvents(context.Background(), from, 1000, 0)
		if err != nil {
			t.Fatalf("read the event log from %s: %v", from, err)
		}
		if p.Skipped != 0 {
			t.Errorf("the event log skipped %d positions from %s", p.Skipped, from)
		}
		if len(p.Messages) == 0 {
			return all
		}
		all = append(all, p.Messages...)
		from = fmt.Sprint(p.Next)
	}
}

// checkTelemetrySurvivesAKill: a device on the built-in hub localhost
// publishes QoS 1 telemetry over MQTT (TLS) and posts it over HTTPS, many
// messages in flight at once; dpsd is killed with SIGKILL while they flow.
// After a restart, the event log read through GET /messages/events holds
// every message a PUBACK or a 204 answered, none twice, at consecutive
// sequence numbers from 1.
func checkTelemetrySurvivesAKill(t *testing.T, storage string) {
	files, hc, tc := sharedTLS(t)
	bin := dpstest.BuildDPSD(t)
	cfg := telemetryNodeConfig(t, storage, files.ServerCert, files.ServerKey)
	p := dpstest.StartDPSD(t, bin, cfg)

	svc, err := client.FromConnectionString("HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + ownerKey)
	if err != nil {
		t.Fatal(err)
	}
	svc.Endpoint, svc.HTTP = "https://"+p.HTTPS, hc
	e, err := svc.PutEnrollment(context.Background(), wire.IndividualEnrollment{RegistrationID: "kill-dev", Attestation: symmetric()}, "")
	if err != nil {
		t.Fatal(err)
	}
	key := e.Attestation.SymmetricKey.PrimaryKey
	dc := &device.Client{Endpoint: "https://" + p.HTTPS, IDScope: killScope, HTTPClient: hc}
	if res, err := dc.Register(context.Background(), "kill-dev", device.SymmetricKey(key), nil); err != nil || res.RegistrationState.AssignedHub != "localhost" {
		t.Fatalf("register: %+v, %v", res, err)
	}
	keyBytes := mustB64(t, key)

	// MQTT: one connection, up to 32 QoS 1 publishes in flight.
	opts := paho.NewClientOptions().AddBroker("tls://" + p.MQTT).SetClientID("kill-dev").
		SetUsername("localhost/kill-dev/?api-version=2021-04-12").
		SetPassword(sas.New("localhost/devices/kill-dev", keyBytes, "", time.Now().Add(time.Hour))).
		SetTLSConfig(&tls.Config{RootCAs: tc.RootCAs, ServerName: "localhost"}).
		SetAutoReconnect(false).SetCleanSession(true).SetProtocolVersion(4).SetKeepAlive(60 * time.Second).
		SetWriteTimeout(5 * time.Second)
	mc := paho.NewClient(opts)
	if tok := mc.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT connect: %v", tok.Error())
	}
	acked := &ackedLog{ids: map[string]bool{}}
	var stop atomic.Bool
	var senders sync.WaitGroup
	senders.Go(func() {
		inflight := make(chan struct{}, 32)
		var waits sync.WaitGroup
		for i := 0; !stop.Load() && mc.IsConnectionOpen(); i++ {
			inflight <- struct{}{}
			id := fmt.Sprintf("mq-%d", i)
			tok := mc.Publish("devices/kill-dev/messages/events/$.mid="+id+"&n="+fmt.Sprint(i), 1, false, fmt.Sprintf(`{"n":%d}`, i))
			acked.sent.Add(1)
			waits.Go(func() {
				defer func() { <-inflight }()
				if tok.WaitTimeout(20*time.Second) && tok.Error() == nil {
					acked.add(id, &acked.mqtt)
				}
			})
		}
		waits.Wait()
	})
	// HTTPS: four devices' worth of concurrent posts of the same device.
	httpClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tc.RootCAs, ServerName: "localhost"},
		MaxIdleConnsPerHost: 8}, Timeout: 20 * time.Second}
	tok := sas.New("localhost/devices/kill-dev", keyBytes, "", time.Now().Add(time.Hour))
	for w := range 4 {
		senders.Go(func() {
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("http-%d-%d", w, i)
				req, _ := http.NewRequest(http.MethodPost, "https://"+p.HTTPS+"/devices/kill-dev/messages/events?api-version=2021-04-12", strings.NewReader(`{"w":1}`))
				req.Host = "localhost"
				req.Header.Set("Authorization", tok)
				req.Header.Set("iothub-messageid", id)
				req.Header.Set("iothub-app-n", fmt.Sprint(i))
				acked.sent.Add(1)
				resp, err := httpClient.Do(req)
				if err != nil { // dpsd was killed: no answer
					time.Sleep(10 * time.Millisecond)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusNoContent {
					acked.add(id, &acked.http)
				} else if !stop.Load() {
					t.Errorf("post %s: HTTP %d", id, resp.StatusCode)
				}
			}
		})
	}
	deadline := time.Now().Add(60 * time.Second)
	for acked.mqtt.Load() < 300 || acked.http.Load() < 100 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d MQTT and %d HTTPS messages acknowledged in a minute", acked.mqtt.Load(), acked.http.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	inFlight := acked.sent.Load() - acked.mqtt.Load() - acked.http.Load()
	p.Kill() // while messages are in flight on both transports
	stop.Store(true)
	senders.Wait()
	mc.Disconnect(0)

	p2 := dpstest.StartDPSD(t, bin, cfg)
	hub, err := client.FromConnectionString("HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=" + hubKey)
	if err != nil {
		t.Fatal(err)
	}
	hub.Endpoint, hub.HTTP = "https://"+p2.HTTPS, hc
	log := readEventLog(t, hub)
	seen := map[string]int64{}
	for i, m := range log {
		if m.SequenceNumber != int64(i+1) {
			t.Errorf("log position %d holds sequence number %d", i+1, m.SequenceNumber)
		}
		if m.SystemProperties["iothub-message-source"] != "Telemetry" {
			continue // the hub's own events (the device's creation, its connections) share the log
		}
		if m.MessageID == nil || m.DeviceID != "kill-dev" {
			t.Errorf("message %d: %+v", m.SequenceNumber, m)
			continue
		}
		if s, dup := seen[*m.MessageID]; dup {
			t.Errorf("%s is in the log twice: sequence numbers %d and %d", *m.MessageID, s, m.SequenceNumber)
		}
		seen[*m.MessageID] = m.SequenceNumber
	}
	acked.mu.Lock()
	defer acked.mu.Unlock()
	lost := 0
	for id := range acked.ids {
		if _, ok := seen[id]; !ok {
			if lost++; lost <= 10 {
				t.Errorf("%s was acknowledged before the kill and is not in the event log", id)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d acknowledged messages lost", lost)
	}
	unacked := len(seen) - (len(acked.ids) - lost)
	t.Logf("about %d messages in flight at the kill", inFlight)
	t.Logf("%d messages sent, %d acknowledged (%d MQTT PUBACKs, %d HTTPS 204s), %d in the log (%d stored whose acknowledgement the kill cut off), %d lost",
		acked.sent.Load(), len(acked.ids), acked.mqtt.Load(), acked.http.Load(), len(seen), unacked, lost)
}

func TestTelemetrySurvivesAKillSQLite(t *testing.T) {
	checkTelemetrySurvivesAKill(t, "sqlite:"+filepath.Join(t.TempDir(), "dps.db"))
}

func TestTelemetrySurvivesAKillPostgres(t *testing.T) {
	cluster, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	conn, err := pgx.Connect(context.Background(), cluster.DSN)
	if err != nil {
		t.Fatal(err)
	}
	dbName := fmt.Sprintf("dps_telemetry_%d", time.Now().UnixNano())
	if _, err := conn.Exec(context.Background(), "CREATE DATABASE "+dbName); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	checkTelemetrySurvivesAKill(t, replaceDB(cluster.DSN, dbName))
}
