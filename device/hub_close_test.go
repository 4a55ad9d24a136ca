package device

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// TestCloseWithStalledWrite: a write stuck on a hub that stopped reading
// (a full TCP window) holds the write lock; Close still ends the
// connection at once.
func TestCloseWithStalledWrite(t *testing.T) {
	c1, c2 := net.Pipe() // the peer never reads
	defer c2.Close()
	h := &Hub{conn: c1, m: &mqttConn{c: c1, r: bufio.NewReader(c1), nextID: 1}, acks: map[uint16]chan []byte{},
		answers: map[string]chan twinAnswer{}, wake: make(chan struct{}, 1), done: make(chan struct{}), finished: make(chan struct{})}
	go h.readLoop()
	go h.publish("devices/d/messages/events/", []byte("x"), 0, 0) // blocks in Write
	time.Sleep(100 * time.Millisecond)
	closed := make(chan struct{})
	go func() { h.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("Hub.Close hung behind a stalled write")
	}
}
