package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps"
	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/pgtest"
	"github.com/opendps/dps/internal/pki"
	"github.com/opendps/dps/internal/store/postgres"
	"github.com/opendps/dps/internal/store/sqlite"
	"github.com/opendps/dps/internal/wire"
	"github.com/opendps/dps/webhook"
)

// slowHook is a custom allocation webhook that answers after delay and
// counts its calls per registration ID.
type slowHook struct {
	srv   *httptest.Server
	ca    string
	mu    sync.Mutex
	calls map[string]int
}

func newSlowHook(t *testing.T, delay time.Duration) *slowHook {
	h := &slowHook{calls: map[string]int{}}
	h.srv = httptest.NewTLSServer(webhook.Handler(func(ctx context.Context, req *webhook.Request) (*webhook.Response, error) {
		h.mu.Lock()
		h.calls[req.DeviceRuntimeContext.RegistrationID]++
		h.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
		return &webhook.Response{IoTHubHostName: req.LinkedHubs[len(req.DeviceRuntimeContext.RegistrationID)%len(req.LinkedHubs)],
			Payload: json.RawMessage(`{"from":"webhook"}`)}, nil
	}, webhook.HandlerOptions{}))
	t.Cleanup(h.srv.Close)
	h.ca = dpstest.WriteFile(t, "hook-ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.srv.Certificate().Raw})))
	return h
}

// sharedTLS mints one server certificate all nodes use, and a client trusting it.
func sharedTLS(t *testing.T) (pki.Files, *http.Client, *tls.Config) {
	files, err := pki.Ensure(t.TempDir(), []string{"localhost", "127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pemCA, _ := os.ReadFile(files.CACert)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	tc := &tls.Config{RootCAs: pool}
	return files, &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}, tc
}

const killScope = "0ne000K1LL0"

func nodeConfig(t *testing.T, name, storage string, files pki.Files, hookCA string) string {
	return dpstest.WriteFile(t, name+".yaml", fmt.Sprintf(`idScope: %s
nodeID: %s
dataDir: %q
storage: %q
listen: { https: "127.0.0.1:0", mqtt: "127.0.0.1:0", admin: "" }
tls: { certFile: %q, keyFile: %q }
retryAfterSeconds: 1
operationLease: 2s
linkedHubs: [{hostName: hub-a.example.net}, {hostName: hub-b.example.net}]
accessPolicies:
  - { name: provisioningserviceowner, primaryKey: %q, rights: [ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite] }
webhook: { caFile: %q, timeout: 10s, retryBudget: 20s }
log: { level: debug }
`, killScope, name, filepath.Join(t.TempDir(), name), storage, files.ServerCert, files.ServerKey, ownerKey, hookCA))
}

type accepted struct {
	id, op, key string
}

// registerAll starts n registrations, spread over the nodes' endpoints.
func registerAll(t *testing.T, hc *http.Client, endpoints []string, groupKey, prefix string, n int) []accepted {
	var out []accepted
	for i := range n {
		id := fmt.Sprintf("%s-%02d", prefix, i)
		k, _ := device.DeriveKey(groupKey, id)
		c := &device.Client{Endpoint: "https://" + endpoints[i%len(endpoints)], IDScope: killScope, HTTPClient: hc}
		res, _, err := c.Start(context.Background(), id, device.SymmetricKey(k), map[string]int{"n": i})
		if err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
		out = append(out, accepted{id: id, op: res.OperationID, key: k})
	}
	return out
}

// waitAll polls every operation (on the given endpoints, round robin) until final.
func waitAll(t *testing.T, hc *http.Client, endpoints []string, ops []accepted) map[string]*device.Result {
	results := map[string]*device.Result{}
	deadline := time.Now().Add(60 * time.Second)
	for len(results) < len(ops) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d operations did not finish", len(ops)-len(results), len(ops))
		}
		for i, a := range ops {
			if results[a.id] != nil {
				continue
			}
			c := &device.Client{Endpoint: "https://" + endpoints[(i+1)%len(endpoints)], IDScope: killScope, HTTPClient: hc}
			res, _, err := c.Poll(context.Background(), a.id, a.op, device.SymmetricKey(a.key))
			if err != nil {
				continue // a node being killed
			}
			if res.Status != "assigning" {
				results[a.id] = res
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return results
}

type inspector interface {
	Registration(ctx context.Context, id string) (dps.Registration, error)
	Operation(ctx context.Context, id string) (dps.Operation, error)
	HubDevice(ctx context.Context, hub, deviceID string) (dps.HubDevice, error)
}

// checkExactlyOnce: every operation assigned, its registration record the
// one the operation reported, and the device on exactly one hub.
func checkExactlyOnce(t *testing.T, db inspector, ops []accepted, results map[string]*device.Result) {
	for _, a := range ops {
		res := results[a.id]
		if res.Status != "assigned" {
			t.Errorf("%s: %s %+v", a.id, res.Status, res.RegistrationState)
			continue
		}
		reg, err := db.Registration(context.Background(), a.id)
		if err != nil || reg.AssignedHub != res.RegistrationState.AssignedHub || reg.ETag != res.RegistrationState.ETag {
			t.Errorf("%s: record %+v, %v; the device was told %s/%s", a.id, reg, err, res.RegistrationState.AssignedHub, res.RegistrationState.ETag)
		}
		on := 0
		for _, hub := range []string{"hub-a.example.net", "hub-b.example.net"} {
			if _, err := db.HubDevice(context.Background(), hub, a.id); err == nil {
				on++
			}
		}
		if on != 1 {
			t.Errorf("%s is on %d hubs", a.id, on)
		}
	}
}

func customGroup(t *testing.T, hc *http.Client, endpoint, hookURL string) string {
	c, err := client.FromConnectionString("HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + ownerKey)
	if err != nil {
		t.Fatal(err)
	}
	c.Endpoint, c.HTTP = "https://"+endpoint, hc
	g, err := c.PutGroup(context.Background(), wire.EnrollmentGroup{EnrollmentGroupID: "kill-grp", Attestation: symmetric(), AllocationPolicy: "custom",
		CustomAllocationDefinition: &wire.CustomAllocationDefinition{WebhookURL: hookURL, APIVersion: "2021-10-01"}}, "*")
	if err != nil {
		t.Fatal(err)
	}
	return g.Attestation.SymmetricKey.PrimaryKey
}

// TestThreeNodesOnePostgresSurviveAKill: three dpsd processes on one
// PostgreSQL; devices register on one node and poll on another; one node is
// killed with SIGKILL while it holds operations waiting on a slow webhook;
// every accepted operation completes exactly once.
func TestThreeNodesOnePostgresSurviveAKill(t *testing.T) {
	cluster, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	conn, err := pgx.Connect(context.Background(), cluster.DSN)
	if err != nil {
		t.Fatal(err)
	}
	dbName := fmt.Sprintf("dps_kill_%d", time.Now().UnixNano())
	if _, err := conn.Exec(context.Background(), "CREATE DATABASE "+dbName); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	dsn := replaceDB(cluster.DSN, dbName)

	hook := newSlowHook(t, 3*time.Second)
	files, hc, _ := sharedTLS(t)
	bin := dpstest.BuildDPSD(t)
	var nodes []*dpstest.Process
	var endpoints []string
	for i := range 3 {
		p := dpstest.StartDPSD(t, bin, nodeConfig(t, fmt.Sprintf("node%d", i), dsn, files, hook.ca))
		nodes = append(nodes, p)
		endpoints = append(endpoints, p.HTTPS)
	}
	if nodes[1].Scope != killScope {
		t.Fatalf("scope = %q", nodes[1].Scope)
	}
	groupKey := customGroup(t, hc, endpoints[1], hook.srv.URL+"/allocate")

	ops := registerAll(t, hc, endpoints, groupKey, "pg-dev", 30)
	time.Sleep(700 * time.Millisecond) // node0 is now waiting on the webhook for its devices
	nodes[0].Kill()
	live := endpoints[1:]
	results := waitAll(t, hc, live, ops)

	db, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkExactlyOnce(t, db, ops, results)
	hook.mu.Lock()
	retried := 0
	for _, n := range hook.calls {
		if n > 1 {
			retried++
		}
	}
	hook.mu.Unlock()
	t.Logf("%d operations; %d taken over after the kill (webhook called again)", len(ops), retried)
	if retried == 0 {
		t.Errorf("no operation was taken over: the kill did not hit in-flight work")
	}
}

// TestSQLiteNodeSurvivesAKill: the same kill on a single SQLite node;
// after a restart every registration reported assigned is still there and
// every accepted operation completes.
func TestSQLiteNodeSurvivesAKill(t *testing.T) {
	hook := newSlowHook(t, 2*time.Second)
	files, hc, _ := sharedTLS(t)
	bin := dpstest.BuildDPSD(t)
	dbPath := filepath.Join(t.TempDir(), "dps.db")
	cfg := nodeConfig(t, "solo", "sqlite:"+dbPath, files, hook.ca)
	p := dpstest.StartDPSD(t, bin, cfg)
	groupKey := customGroup(t, hc, p.HTTPS, hook.srv.URL+"/allocate")

	done := registerAll(t, hc, []string{p.HTTPS}, groupKey, "early", 5)
	early := waitAll(t, hc, []string{p.HTTPS}, done)
	ops := registerAll(t, hc, []string{p.HTTPS}, groupKey, "sq-dev", 15)
	time.Sleep(300 * time.Millisecond)
	p.Kill()

	p2 := dpstest.StartDPSD(t, bin, cfg)
	results := waitAll(t, hc, []string{p2.HTTPS}, ops)
	p2.Stop()
	db, err := sqlite.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkExactlyOnce(t, db, done, early)
	checkExactlyOnce(t, db, ops, results)
}

// replaceDB swaps the database name of a postgres:// DSN.
func replaceDB(dsn, name string) string {
	base, query, _ := strings.Cut(dsn, "?")
	base = base[:strings.LastIndex(base, "/")+1] + name
	if query != "" {
		return base + "?" + query
	}
	return base
}

// TestPostgresOutage: while the database is down, readiness is false and
// requests answer 503 in the DPS error shape; when it returns, dpsd serves
// again by itself.
func TestPostgresOutage(t *testing.T) {
	cluster, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	dir := t.TempDir()
	s, hc := startServer(t, dir, "storage: \""+cluster.DSN+"\"\n"+fmt.Sprintf(policiesYAML, ownerKey, readerKey))
	ctx := context.Background()
	svc := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	e, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "outage-dev", Attestation: symmetric()}, "")
	if err != nil {
		t.Fatal(err)
	}
	key := e.Attestation.SymmetricKey.PrimaryKey
	readyz := func() int {
		resp, err := http.Get("http://" + s.adminLn.Addr().String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := readyz(); got != 200 {
		t.Fatalf("readyz before the outage = %d", got)
	}

	if err := cluster.Pause(); err != nil {
		t.Fatal(err)
	}
	if got := readyz(); got != 503 {
		t.Errorf("readyz during the outage = %d, want 503", got)
	}
	_, err = s.client(hc).Register(ctx, "outage-dev", device.SymmetricKey(key), nil)
	var de *device.Error
	if !errors.As(err, &de) || de.StatusCode != 503 || de.ErrorCode != 503001 || de.TrackingID == "" {
		t.Errorf("register during the outage: %v, want 503 with errorCode 503001", err)
	}
	_, err = svc.Enrollment(ctx, "outage-dev")
	wantStatus(t, err, 503)

	if err := cluster.Resume(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for readyz() != 200 {
		if time.Now().After(deadline) {
			t.Fatal("dpsd did not become ready after the database returned")
		}
		time.Sleep(200 * time.Millisecond)
	}
	res, err := s.client(hc).Register(ctx, "outage-dev", device.SymmetricKey(key), nil)
	if err != nil || res.Status != "assigned" {
		t.Fatalf("register after the outage = %+v, %v", res, err)
	}
}
