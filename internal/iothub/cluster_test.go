package iothub_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
)

// memCluster is an in-memory iothub.Cluster: every published message
// reaches every node's Deliver, in order, on one goroutine per node (as
// PostgreSQL's notifications reach each listener).
type memCluster struct {
	mu     sync.Mutex
	nodes  []chan []byte
	holder map[string]claim
	epoch  int64
	// gate, when set, holds the next Claim until it is closed.
	gate chan struct{}
}

type claim struct {
	node  string
	epoch int64
}

func (m *memCluster) join(t *testing.T, s *iothub.Service) {
	ch := make(chan []byte, 64)
	m.mu.Lock()
	m.nodes = append(m.nodes, ch)
	m.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for msg := range ch {
			s.Deliver(msg)
		}
	}()
	t.Cleanup(func() { close(ch); <-done })
}

func (m *memCluster) Publish(_ context.Context, msg []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ch := range m.nodes {
		ch <- msg
	}
	return nil
}

func (m *memCluster) Claim(_ context.Context, hub, deviceID, node string) (string, int64, error) {
	m.mu.Lock()
	if g := m.gate; g != nil {
		m.gate = nil
		m.mu.Unlock()
		<-g
		m.mu.Lock()
	}
	defer m.mu.Unlock()
	prev := m.holder[hub+"/"+deviceID]
	m.epoch++
	m.holder[hub+"/"+deviceID] = claim{node, m.epoch}
	return prev.node, m.epoch, nil
}

func (m *memCluster) Release(_ context.Context, hub, deviceID string, epoch int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holder[hub+"/"+deviceID].epoch == epoch {
		delete(m.holder, hub+"/"+deviceID)
	}
	return nil
}

func (m *memCluster) Holder(_ context.Context, hub, deviceID string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.holder[hub+"/"+deviceID].node, nil
}

func (m *memCluster) Forget(_ context.Context, node string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, c := range m.holder {
		if c.node == node {
			delete(m.holder, k)
		}
	}
	return nil
}

func (m *memCluster) holderOf(deviceID string) string {
	h, _ := m.Holder(context.Background(), hub, deviceID)
	return h
}

// eventually waits up to 5 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("%s: not after 5 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *conn) snapshot() (desired, methods []string, closed error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.desired...), append([]string(nil), c.methods...), c.closed
}

// TestClusterReachesDevicesOnOtherNodes: two nodes' hubs on one store and
// a cluster. A device connected to node B gets the desired update and
// answers the direct method made on node A; a device connected nowhere is
// not online on either; connecting the device to A closes its connection
// to B; a provisioning on A that moves the device away closes it on B.
func TestClusterReachesDevicesOnOtherNodes(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	cl := &memCluster{holder: map[string]claim{}}
	nodeA := iothub.New(iothub.Options{Store: f.st, Hubs: []string{hub}, Cluster: cl, Node: "a", Now: func() time.Time { return f.now }})
	nodeB := iothub.New(iothub.Options{Store: f.st, Hubs: []string{hub}, Cluster: cl, Node: "b", Now: func() time.Time { return f.now }})
	cl.join(t, nodeA)
	cl.join(t, nodeB)

	if _, err := nodeA.InvokeMethod(ctx, hub, "dev-1", "reboot", nil, 0); !isCode(err, dps.CodeDeviceNotOnline) {
		t.Errorf("connected nowhere: err = %v, want 404103", err)
	}
	id := f.connect(t)
	onB := &conn{subscribe: true}
	nodeB.Attach(id, onB)
	eventually(t, "node b holds the device's connection", func() bool { return cl.holderOf("dev-1") == "b" })

	if _, err := nodeA.PatchDesired(ctx, hub, "dev-1", []byte(`{"interval":60}`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "desired notification on node b", func() bool { d, _, _ := onB.snapshot(); return len(d) == 1 })
	if d, _, _ := onB.snapshot(); d[0] != `2 {"interval":60,"$version":2}` {
		t.Errorf("notification on b = %q", d)
	}

	onB.mu.Lock()
	onB.onMethod = func(rid string) { nodeB.MethodResponse(id, rid, 200, []byte(`{"rebooted":true}`)) }
	onB.mu.Unlock()
	res, err := nodeA.InvokeMethod(ctx, hub, "dev-1", "reboot", json.RawMessage(`{"delay":2}`), 0)
	if err != nil || res.Status != 200 || string(res.Payload) != `{"rebooted":true}` {
		t.Fatalf("method through node a = %+v, %v", res, err)
	}
	if _, m, _ := onB.snapshot(); len(m) != 1 || m[0] != `reboot {"delay":2}` {
		t.Errorf("requests on b = %q", m)
	}
	// Not subscribed to methods on b: not online, at once.
	onB.mu.Lock()
	onB.subscribe = false
	onB.mu.Unlock()
	start := time.Now()
	if _, err := nodeA.InvokeMethod(ctx, hub, "dev-1", "reboot", nil, 0); !isCode(err, dps.CodeDeviceNotOnline) || time.Since(start) > 5*time.Second {
		t.Errorf("not subscribed on b: err = %v after %s, want 404103 at once", err, time.Since(start))
	}

	// The device connects to node a: its connection to b closes.
	onA := &conn{subscribe: true}
	nodeA.Attach(id, onA)
	eventually(t, "connection on b closed", func() bool { _, _, c := onB.snapshot(); return c != nil })
	if _, _, c := onA.snapshot(); c != nil {
		t.Fatalf("the new connection on a was closed: %v", c)
	}
	eventually(t, "node a holds the device's connection", func() bool { return cl.holderOf("dev-1") == "a" })

	// A provisioning on b moves the device to another hub: closed on a.
	nodeB.Provisioned(ctx, dps.HubDevice{Hub: "elsewhere.example.test", DeviceID: "dev-1", Status: dps.DeviceEnabled}, &dps.HubDevice{Hub: hub, DeviceID: "dev-1"})
	eventually(t, "connection on a closed by b's provisioning", func() bool { _, _, c := onA.snapshot(); return c != nil })
	if _, _, c := onA.snapshot(); !strings.Contains(c.Error(), "another hub") {
		t.Errorf("closed because %v", c)
	}
}

// TestClusterDetachForgetsTheClaim: a connection that ends releases its
// claim, but not a later connection's.
func TestClusterDetachForgetsTheClaim(t *testing.T) {
	f := newFixture(t)
	cl := &memCluster{holder: map[string]claim{}}
	node := iothub.New(iothub.Options{Store: f.st, Hubs: []string{hub}, Cluster: cl, Node: "a"})
	cl.join(t, node)
	id := f.connect(t)
	detachFirst := node.Attach(id, &conn{})
	eventually(t, "first claim", func() bool { return cl.holderOf("dev-1") == "a" })
	cl.mu.Lock()
	first := cl.holder[hub+"/dev-1"].epoch
	cl.mu.Unlock()
	detachSecond := node.Attach(id, &conn{})
	eventually(t, "second claim", func() bool { cl.mu.Lock(); defer cl.mu.Unlock(); return cl.holder[hub+"/dev-1"].epoch > first })
	detachFirst()
	time.Sleep(50 * time.Millisecond)
	if cl.holderOf("dev-1") != "a" {
		t.Fatal("the first connection's end released the second's claim")
	}
	detachSecond()
	eventually(t, "claim released", func() bool { return cl.holderOf("dev-1") == "" })
}

// TestClusterClaimsInConnectionOrder: a device that reconnects while its
// first connection's claim is still being recorded: the second claim is
// made after the first, so the end of the first connection does not
// forget the second's.
func TestClusterClaimsInConnectionOrder(t *testing.T) {
	f := newFixture(t)
	gate := make(chan struct{})
	cl := &memCluster{holder: map[string]claim{}, gate: gate}
	node := iothub.New(iothub.Options{Store: f.st, Hubs: []string{hub}, Cluster: cl, Node: "a"})
	cl.join(t, node)
	id := f.connect(t)
	detachFirst := node.Attach(id, &conn{})
	time.Sleep(20 * time.Millisecond) // the first claim is held at the gate
	second := &conn{}
	node.Attach(id, second)
	time.Sleep(20 * time.Millisecond) // a second claim made now would get the first epoch
	close(gate)
	eventually(t, "both claims made", func() bool { cl.mu.Lock(); defer cl.mu.Unlock(); return cl.epoch == 2 })
	detachFirst()
	time.Sleep(50 * time.Millisecond)
	if h := cl.holderOf("dev-1"); h != "a" {
		t.Fatalf("holder after the first connection ended = %q, want a (the second connection is live)", h)
	}
	if _, _, closed := second.snapshot(); closed != nil {
		t.Fatalf("the live connection was closed: %v", closed)
	}
}
