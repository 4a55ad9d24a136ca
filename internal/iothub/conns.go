package iothub

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opendps/dps"
)

// Conn is a device's live connection, as its transport hands it to the
// hub (Attach). The hub calls it from any goroutine; calls must not block
// for long (queue or drop, as QoS 0 allows).
type Conn interface {
	// Desired delivers a desired-property notification: the patch as
	// applied plus "$version". It reports false when the device has not
	// subscribed to notifications (nothing was sent).
	Desired(version int64, body []byte) bool
	// Method delivers a direct-method request with the hub's request id;
	// body is JSON. It reports false when the device has not subscribed
	// to methods.
	Method(name, rid string, body []byte) bool
	// C2D tells the connection that cloud-to-device messages are
	// waiting for the device: a transport that delivers them (MQTT)
	// pulls them from the hub (Receive) when the device has subscribed.
	// It must not block.
	C2D()
	// Close ends the connection: another authenticated connection of the
	// same device replaced it, or the identity was deleted or disabled.
	Close(reason error)
}

// registry holds the connected devices of this node and the direct-method
// calls waiting for their answers.
type registry struct {
	mu      sync.Mutex
	conns   map[string]*attached   // hub\x00device (hub folded) → connection
	pending map[string]pendingCall // by request id
	seq     uint64                 // last method request id
}

// pendingCall is a direct-method call waiting for the answer of its device.
type pendingCall struct {
	device string // key of the device called
	ch     chan MethodResult
}

type attached struct {
	c     Conn
	id    Identity
	since time.Time
	// replaced is set when another connection of the device replaced
	// this one (here or on another node): its end is no disconnection.
	replaced atomic.Bool

	// With a Cluster: closed once the connection's claim is recorded
	// (cluster.go), epoch that claim's, superseded the latest epoch of
	// another claim heard of before.
	claimed    chan struct{}
	after      chan struct{} // the claim of the device's previous connection on this node, made first
	mu         sync.Mutex
	epoch      int64
	superseded int64
}

func (r *registry) init() {
	r.conns = map[string]*attached{}
	r.pending = map[string]pendingCall{}
}

func key(hub, deviceID string) string { return strings.ToLower(hub) + "\x00" + deviceID }

// Attach records c as the device's connection on this node, replacing
// (and closing) an earlier one, and appends its deviceConnected event
// (sources.go). Detach with the returned function; it removes c only if
// it is still the device's connection, and appends the
// deviceDisconnected event unless another connection of the device
// replaced c.
func (s *Service) Attach(id Identity, c Conn) (detach func()) {
	k := key(id.Hub, id.DeviceID)
	a := &attached{c: c, id: id, since: s.o.Now()}
	s.conns.mu.Lock()
	old := s.conns.conns[k]
	s.conns.conns[k] = a
	s.conns.mu.Unlock()
	if old != nil && old.c != c {
		old.replaced.Store(true)
		old.c.Close(dps.Errorf(dps.KindConflict, "another connection of the device replaced this one"))
	}
	s.DeviceConnected(context.Background(), id)
	if s.o.Cluster != nil {
		// Across the nodes: the node that held the device's connection
		// closes it.
		a.claimed = make(chan struct{})
		if old != nil {
			a.after = old.claimed // so that the newer claim gets the larger epoch
		}
		go s.claim(a)
	}
	var once sync.Once
	return func() {
		s.conns.mu.Lock()
		if s.conns.conns[k] == a {
			delete(s.conns.conns, k)
		}
		s.conns.mu.Unlock()
		once.Do(func() {
			if !a.replaced.Load() {
				s.DeviceDisconnected(context.Background(), id)
			}
		})
		if s.o.Cluster != nil {
			go s.release(a)
		}
	}
}

// Connected reports whether the device has a connection on this node, and
// since when.
func (s *Service) Connected(hub, deviceID string) (time.Time, bool) {
	s.conns.mu.Lock()
	defer s.conns.mu.Unlock()
	a, ok := s.conns.conns[key(hub, deviceID)]
	if !ok {
		return time.Time{}, false
	}
	return a.since, true
}

// Disconnect closes the device's connection on this node, if any (the
// identity was deleted or disabled).
func (s *Service) Disconnect(hub, deviceID string, reason error) {
	s.conns.mu.Lock()
	a := s.conns.conns[key(hub, deviceID)]
	s.conns.mu.Unlock()
	if a != nil {
		a.c.Close(reason)
	}
}

func (r *registry) lookup(hub, deviceID string) *attached {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns[key(hub, deviceID)]
}

// MethodResult is a device's answer to a direct method.
type MethodResult struct {
	Status  int
	Payload json.RawMessage // JSON; null when the device sent no body
}

// Method limits, as IoT Hub's.
const (
	MinMethodTimeout     = 5 * time.Second
	MaxMethodTimeout     = 300 * time.Second
	DefaultMethodTimeout = 30 * time.Second
	MaxMethodPayload     = 128 * 1024
)

// InvokeMethod calls a direct method on a connected device and waits for
// its answer, at most timeout (clamped to IoT Hub's 5–300 s; 0 means 30 s).
// payload is JSON (nil: null).
//
// Errors: KindNotFound with dps.CodeDeviceNotOnline when the device is not
// connected or has not subscribed to methods; KindTimeout with
// dps.CodeGatewayTimeout when it did not answer in time; KindInvalid for a
// bad method name or payload.
func (s *Service) InvokeMethod(ctx context.Context, hub, deviceID, name string, payload json.RawMessage, timeout time.Duration) (MethodResult, error) {
	switch {
	case timeout == 0:
		timeout = DefaultMethodTimeout
	case timeout < MinMethodTimeout:
		timeout = MinMethodTimeout
	case timeout > MaxMethodTimeout:
		timeout = MaxMethodTimeout
	}
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	if !json.Valid(payload) {
		return MethodResult{}, dps.Errorf(dps.KindInvalid, "the method payload is not JSON")
	}
	if len(payload) > MaxMethodPayload {
		return MethodResult{}, &dps.Error{Kind: dps.KindTooLarge, Code: dps.CodeTooLarge, Message: "The method payload is over 128 KB."}
	}
	if s.o.Cluster != nil && s.conns.lookup(hub, deviceID) == nil {
		return s.invokeRemote(ctx, hub, deviceID, name, payload, timeout)
	}
	return s.invokeLocal(ctx, hub, deviceID, name, payload, timeout)
}

// invokeLocal calls a direct method on a device connected to this node.
func (s *Service) invokeLocal(ctx context.Context, hub, deviceID, name string, payload json.RawMessage, timeout time.Duration) (MethodResult, error) {
	a := s.conns.lookup(hub, deviceID)
	if a == nil {
		return MethodResult{}, notOnline(deviceID)
	}
	r := &s.conns
	ch := make(chan MethodResult, 1)
	r.mu.Lock()
	r.seq++
	rid := strconv.FormatUint(r.seq, 10)
	r.pending[rid] = pendingCall{device: key(hub, deviceID), ch: ch}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.pending, rid)
		r.mu.Unlock()
	}()
	if !a.c.Method(name, rid, payload) {
		return MethodResult{}, notOnline(deviceID)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case res := <-ch:
		return res, nil
	case <-t.C:
		return MethodResult{}, methodTimedOut(deviceID)
	case <-ctx.Done():
		return MethodResult{}, ctx.Err()
	}
}

func methodTimedOut(deviceID string) error {
	return &dps.Error{Kind: dps.KindTimeout, Code: dps.CodeGatewayTimeout,
		Message: "Timed out waiting for the response from device " + deviceID + "."}
}

func notOnline(deviceID string) error {
	return &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeDeviceNotOnline,
		Message: "The operation failed because the requested device isn't online or hasn't registered the direct method callback."}
}

// MethodResponse is a device's answer to the method request rid (from its
// transport). An answer nobody waits for any more (unknown rid, timed
// out, or a request to another device) is dropped, as IoT Hub does. A body
// that is empty or not JSON is passed on as JSON null or as a JSON string.
func (s *Service) MethodResponse(id Identity, rid string, status int, body []byte) {
	r := &s.conns
	r.mu.Lock()
	call, ok := r.pending[rid]
	if ok && call.device == key(id.Hub, id.DeviceID) {
		delete(r.pending, rid)
	} else {
		ok = false
	}
	r.mu.Unlock()
	if !ok {
		return
	}
	var p json.RawMessage
	switch {
	case len(strings.TrimSpace(string(body))) == 0:
		p = json.RawMessage("null")
	case json.Valid(body):
		p = json.RawMessage(body)
	default:
		b, _ := json.Marshal(string(body))
		p = b
	}
	call.ch <- MethodResult{Status: status, Payload: p}
}
