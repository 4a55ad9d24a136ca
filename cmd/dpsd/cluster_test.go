package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/pgtest"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/store/postgres"
)

// TestTwoNodesReachTheirDevices: two dpsd nodes on one PostgreSQL serve
// the built-in hub localhost. A device provisioned through node A connects
// to node B; the desired-property update and the direct method made on
// node A's service API reach it on B; when the device connects to node A,
// its connection to B closes (one connection per device across nodes).
func TestTwoNodesReachTheirDevices(t *testing.T) {
	cluster, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, cluster.DSN)
	if err != nil {
		t.Fatal(err)
	}
	dbName := fmt.Sprintf("dps_cluster_%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+dbName); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	dsn := replaceDB(cluster.DSN, dbName)

	files, hc, tc := sharedTLS(t)
	hubKey := dpstest.Key(32)
	bin := dpstest.BuildDPSD(t)
	var nodes []*dpstest.Process
	for _, name := range []string{"node-a", "node-b"} {
		cfg := dpstest.WriteFile(t, name+".yaml", fmt.Sprintf(`idScope: %s
nodeID: %s
dataDir: %q
storage: %q
listen: { https: "127.0.0.1:0", mqtt: "127.0.0.1:0", admin: "" }
tls: { certFile: %q, keyFile: %q }
retryAfterSeconds: 1
linkedHubs:
  - hostName: localhost
    accessPolicies: [ { name: iothubowner, primaryKey: %q, rights: [RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect] } ]
log: { level: debug }
`, killScope, name, filepath.Join(t.TempDir(), name), dsn, files.ServerCert, files.ServerKey, hubKey))
		nodes = append(nodes, dpstest.StartDPSD(t, bin, cfg))
	}
	a, b := nodes[0], nodes[1]

	db, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	e := dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment("cluster-dev"))
	key := string(e.Attestation.SymmetricKey.PrimaryKey)
	dc := &device.Client{Endpoint: "https://" + a.HTTPS, IDScope: killScope, HTTPClient: hc}
	res, err := dc.Register(ctx, "cluster-dev", device.SymmetricKey(key), nil)
	if err != nil || res.RegistrationState == nil || res.RegistrationState.AssignedHub != "localhost" {
		t.Fatalf("register through node a = %+v, %v", res, err)
	}

	// The device on node B, subscribed to desired properties and methods.
	lost := make(chan error, 2)
	got := make(chan paho.Message, 16)
	connect := func(p *dpstest.Process) paho.Client {
		t.Helper()
		o := paho.NewClientOptions().AddBroker("tls://" + p.MQTT).SetClientID("cluster-dev").
			SetUsername("localhost/cluster-dev/?api-version=2021-04-12").
			SetPassword(sas.New("localhost/devices/cluster-dev", mustB64(t, key), "", time.Now().Add(time.Hour))).
			SetTLSConfig(tc).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
			SetProtocolVersion(4).SetConnectTimeout(5 * time.Second).
			SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
		cl := paho.NewClient(o)
		if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("connect to %s: %v", p.MQTT, tok.Error())
		}
		return cl
	}
	onB := connect(b)
	defer onB.Disconnect(0)
	for _, filter := range []string{"$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#"} {
		if tok := onB.Subscribe(filter, 0, func(_ paho.Client, m paho.Message) { got <- m }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", filter, tok.Error())
		}
	}
	waitFor := func(prefix string) paho.Message {
		t.Helper()
		for {
			select {
			case m := <-got:
				if strings.HasPrefix(m.Topic(), prefix) {
					return m
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("nothing on %s… reached the device on node b", prefix)
				return nil
			}
		}
	}

	service := func(method, path string, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "https://"+a.HTTPS+path, bytes.NewReader([]byte(body)))
		req.Host = "localhost" // the hub, by its name
		req.Header.Set("Authorization", sas.New("localhost", mustB64(t, hubKey), "iothubowner", time.Now().Add(time.Hour)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("If-Match", "*")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	if code, body := service(http.MethodPatch, "/twins/cluster-dev?api-version=2021-04-12", `{"properties":{"desired":{"interval":60}}}`); code != http.StatusOK {
		t.Fatalf("desired update on node a: HTTP %d %s", code, body)
	}
	m := waitFor("$iothub/twin/PATCH/properties/desired/")
	var note map[string]any
	if err := json.Unmarshal(m.Payload(), &note); err != nil || note["interval"] != float64(60) || note["$version"] != float64(2) {
		t.Fatalf("desired notification on node b = %s", m.Payload())
	}

	// The device answers methods.
	go func() {
		for m := range got {
			if rid, ok := strings.CutPrefix(m.Topic(), "$iothub/methods/POST/reboot/?$rid="); ok {
				onB.Publish("$iothub/methods/res/200/?$rid="+rid, 0, false, `{"rebooted":true}`).Wait()
			}
		}
	}()
	// Node B holds the connection once it recorded its claim; until then
	// a method call on A finds the device offline.
	deadline := time.Now().Add(10 * time.Second)
	var code int
	var body string
	for {
		code, body = service(http.MethodPost, "/twins/cluster-dev/methods?api-version=2021-04-12", `{"methodName":"reboot","responseTimeoutInSeconds":10,"payload":{"delay":1}}`)
		if code != http.StatusNotFound || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // B's claim not recorded yet
	}
	if code != http.StatusOK || !strings.Contains(body, `"status":200`) || !strings.Contains(body, `"rebooted":true`) {
		t.Fatalf("method through node a: HTTP %d %s", code, body)
	}

	// The device connects to node A: node B's connection closes.
	onA := connect(a)
	defer onA.Disconnect(0)
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection to node b stayed open after the device connected to node a")
	}
	time.Sleep(300 * time.Millisecond)
	if !onA.IsConnectionOpen() {
		t.Fatal("the new connection to node a was closed")
	}
}
