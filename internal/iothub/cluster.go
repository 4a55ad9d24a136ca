package iothub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/opendps/dps"
)

// Cluster connects the hubs of the nodes that share a store, so that a
// device connected to any node is reached from every node: a service's
// desired-property update, direct-method call or cloud-to-device message
// made on one node reaches the device's connection on another, and a
// device has one connection across all nodes. PostgreSQL's LISTEN/NOTIFY
// implements it (internal/store/postgres.HubBus); a hub without one
// (Options.Cluster nil) is alone.
type Cluster interface {
	// Publish sends msg to every node's Deliver, this node's included.
	Publish(ctx context.Context, msg []byte) error
	// Claim records node as the holder of the device's connection. It
	// returns the previous holder ("" when none) and the claim's epoch,
	// larger than any earlier claim's.
	Claim(ctx context.Context, hub, deviceID, node string) (prev string, epoch int64, err error)
	// Release forgets the claim of that epoch (a later claim stays).
	Release(ctx context.Context, hub, deviceID string, epoch int64) error
	// Holder returns the node holding the device's connection, "" when
	// none.
	Holder(ctx context.Context, hub, deviceID string) (string, error)
	// Forget drops every claim of node.
	Forget(ctx context.Context, node string) error
}

// clusterMessage is what the hubs of the nodes tell each other (JSON).
type clusterMessage struct {
	Kind    string `json:"k"`
	From    string `json:"f"`           // the sending node
	To      string `json:"t,omitempty"` // the node it is for; "" every node
	Hub     string `json:"h,omitempty"`
	Device  string `json:"d,omitempty"`
	RID     string `json:"r,omitempty"`  // a method call's id, the caller's
	Name    string `json:"n,omitempty"`  // a method's name; a generation
	Version int64  `json:"v,omitempty"`  // desired $version; a claim's epoch
	Status  int    `json:"s,omitempty"`  // a method's status
	Timeout int64  `json:"ms,omitempty"` // a method call's timeout, ms
	Body    []byte `json:"b,omitempty"`
	Offline bool   `json:"o,omitempty"` // a method result: the device is not online
	Reason  string `json:"e,omitempty"` // why a connection is closed
}

const (
	msgTakeover = "takeover" // another node's claim replaced To's connection of the device
	msgDesired  = "desired"  // a desired-property notification for whichever node holds the device
	msgMethod   = "method"   // a direct-method call for To's connection of the device
	msgResult   = "result"   // a method's answer, for the calling node To
	msgClose    = "close"    // close the device's connection, wherever it is (Name: unless of this generation)
	msgC2D      = "c2d"      // cloud-to-device messages wait for the device, wherever it is connected
)

// clusterState is a node's side of the cluster: its name and the method
// calls it made to other nodes' devices.
type clusterState struct {
	node      string
	ridPrefix string
	mu        sync.Mutex
	seq       uint64
	waiting   map[string]chan clusterMessage // by RID
}

func (s *Service) initCluster() {
	b := make([]byte, 8)
	rand.Read(b)
	s.cl.node = s.o.Node
	if s.cl.node == "" {
		s.cl.node = "hub-" + hex.EncodeToString(b)
	}
	// Method calls' ids are new with every start: a late answer to a call
	// of this node's previous run is not taken for one of this run's.
	s.cl.ridPrefix = hex.EncodeToString(b[:4]) + "-"
	s.cl.waiting = map[string]chan clusterMessage{}
}

// Leave forgets this node's connections in the Cluster (at shutdown, so
// other nodes find its devices offline at once).
func (s *Service) Leave(ctx context.Context) error {
	if s.o.Cluster == nil {
		return nil
	}
	return s.o.Cluster.Forget(ctx, s.cl.node)
}

// Node is this node's name in the cluster.
func (s *Service) Node() string { return s.cl.node }

// publish sends m to the other nodes; a failure is logged (the message is
// lost, as a notification to a disconnected device would be).
func (s *Service) publish(ctx context.Context, m clusterMessage) {
	m.From = s.cl.node
	b, err := json.Marshal(m)
	if err == nil {
		err = s.o.Cluster.Publish(context.WithoutCancel(ctx), b)
	}
	if err != nil {
		s.o.Logger.WarnContext(ctx, "hub cluster: a message to the other nodes was lost", "kind", m.Kind, "hub", m.Hub, "device_id", m.Device, "error", err)
	}
}

// Deliver handles a message of the cluster (Cluster.Publish, from any
// node). Messages of this node and messages for other nodes are ignored.
func (s *Service) Deliver(msg []byte) {
	var m clusterMessage
	if err := json.Unmarshal(msg, &m); err != nil || m.From == s.cl.node || m.To != "" && m.To != s.cl.node {
		return
	}
	ctx := context.Background()
	switch m.Kind {
	case msgTakeover:
		if a := s.conns.lookup(m.Hub, m.Device); a != nil && a.supersede(m.Version) {
			a.replaced.Store(true)
			a.c.Close(dps.Errorf(dps.KindConflict, "another connection of the device replaced this one"))
		}
	case msgDesired:
		if a := s.conns.lookup(m.Hub, m.Device); a != nil {
			a.c.Desired(m.Version, m.Body)
		}
	case msgClose:
		if a := s.conns.lookup(m.Hub, m.Device); a != nil && (m.Name == "" || a.id.GenerationID != m.Name) {
			a.c.Close(dps.Errorf(dps.KindNotFound, "%s", m.Reason))
		}
	case msgC2D:
		s.conns.kickC2D(m.Hub, m.Device)
	case msgMethod:
		go s.serveRemoteMethod(ctx, m)
	case msgResult:
		s.cl.mu.Lock()
		ch := s.cl.waiting[m.RID]
		delete(s.cl.waiting, m.RID)
		s.cl.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

// claim records a's connection as the device's across the nodes, and
// tells the node that held it before to close its connection.
func (s *Service) claim(a *attached) {
	defer close(a.claimed)
	if a.after != nil {
		<-a.after
	}
	ctx := context.Background()
	prev, epoch, err := s.o.Cluster.Claim(ctx, a.id.Hub, a.id.DeviceID, s.cl.node)
	if err != nil {
		// Unrecorded, the connection could not be reached from other
		// nodes nor replaced by them: the device connects again.
		s.o.Logger.WarnContext(ctx, "hub cluster: recording the device's connection failed; closing it", "hub", a.id.Hub, "device_id", a.id.DeviceID, "error", err)
		a.c.Close(dps.Errorf(dps.KindUnavailable, "the hub could not record the connection; connect again"))
		return
	}
	if a.claimedAt(epoch) {
		a.replaced.Store(true)
		a.c.Close(dps.Errorf(dps.KindConflict, "another connection of the device replaced this one"))
	}
	if prev != "" && prev != s.cl.node {
		s.publish(ctx, clusterMessage{Kind: msgTakeover, To: prev, Hub: a.id.Hub, Device: a.id.DeviceID, Version: epoch})
	}
}

// release forgets a's claim once it is made.
func (s *Service) release(a *attached) {
	<-a.claimed
	a.mu.Lock()
	epoch := a.epoch
	a.mu.Unlock()
	if epoch == 0 {
		return
	}
	if err := s.o.Cluster.Release(context.Background(), a.id.Hub, a.id.DeviceID, epoch); err != nil {
		s.o.Logger.Warn("hub cluster: forgetting the device's connection failed", "hub", a.id.Hub, "device_id", a.id.DeviceID, "error", err)
	}
}

// supersede reports whether a claim of that epoch replaces a's
// connection. A connection whose own claim is not made yet remembers it:
// its claim closes it if it turns out older (claimedAt).
func (a *attached) supersede(epoch int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.epoch == 0 {
		a.superseded = max(a.superseded, epoch)
		return false
	}
	return a.epoch < epoch
}

// claimedAt records a's epoch and reports whether a later claim has
// replaced it meanwhile.
func (a *attached) claimedAt(epoch int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.epoch = epoch
	return a.superseded > epoch
}

// notifyDesired sends a desired-property notification to the device's
// connection, on this node or, through the cluster, on another.
func (s *Service) notifyDesired(ctx context.Context, hub, deviceID string, version int64, body []byte) {
	if a := s.conns.lookup(hub, deviceID); a != nil {
		a.c.Desired(version, body)
		return
	}
	if s.o.Cluster != nil {
		s.publish(ctx, clusterMessage{Kind: msgDesired, Hub: hub, Device: deviceID, Version: version, Body: body})
	}
}

// closeEverywhere closes the device's connection, on this node and on the
// others; with generation set, unless the connection authenticated as that
// generation of the identity.
func (s *Service) closeEverywhere(ctx context.Context, hub, deviceID, generation string, reason *dps.Error) {
	if a := s.conns.lookup(hub, deviceID); a != nil && (generation == "" || a.id.GenerationID != generation) {
		a.c.Close(reason)
	}
	if s.o.Cluster != nil {
		s.publish(ctx, clusterMessage{Kind: msgClose, Hub: hub, Device: deviceID, Name: generation, Reason: reason.Message})
	}
}

// invokeRemote calls a direct method on a device connected to another
// node, through the cluster.
func (s *Service) invokeRemote(ctx context.Context, hub, deviceID, name string, payload json.RawMessage, timeout time.Duration) (MethodResult, error) {
	holder, err := s.o.Cluster.Holder(ctx, hub, deviceID)
	if err != nil {
		return MethodResult{}, err
	}
	if holder == "" || holder == s.cl.node {
		return MethodResult{}, notOnline(deviceID)
	}
	ch := make(chan clusterMessage, 1)
	s.cl.mu.Lock()
	s.cl.seq++
	rid := s.cl.ridPrefix + strconv.FormatUint(s.cl.seq, 10)
	s.cl.waiting[rid] = ch
	s.cl.mu.Unlock()
	defer func() {
		s.cl.mu.Lock()
		delete(s.cl.waiting, rid)
		s.cl.mu.Unlock()
	}()
	s.publish(ctx, clusterMessage{Kind: msgMethod, To: holder, Hub: hub, Device: deviceID, RID: rid, Name: name, Body: payload, Timeout: timeout.Milliseconds()})
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case m := <-ch:
		if m.Offline {
			return MethodResult{}, notOnline(deviceID)
		}
		return MethodResult{Status: m.Status, Payload: json.RawMessage(m.Body)}, nil
	case <-t.C:
		return MethodResult{}, methodTimedOut(deviceID)
	case <-ctx.Done():
		return MethodResult{}, ctx.Err()
	}
}

// serveRemoteMethod calls, for another node, a direct method on a device
// connected to this one, and sends the answer back.
func (s *Service) serveRemoteMethod(ctx context.Context, m clusterMessage) {
	answer := clusterMessage{Kind: msgResult, To: m.From, RID: m.RID}
	res, err := s.invokeLocal(ctx, m.Hub, m.Device, m.Name, m.Body, time.Duration(m.Timeout)*time.Millisecond)
	switch {
	case err == nil:
		answer.Status, answer.Body = res.Status, res.Payload
	case dps.AsError(err).Code == dps.CodeDeviceNotOnline:
		answer.Offline = true
	default:
		return // timed out: the caller times out too
	}
	s.publish(ctx, answer)
}
