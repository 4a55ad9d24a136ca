package connlimit_test

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps/internal/connlimit"
)

// fakeListener hands out the server ends of pipes whose remote address is
// chosen by the test.
type fakeListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newFake() *fakeListener {
	return &fakeListener{conns: make(chan net.Conn, 64), done: make(chan struct{})}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.done:
		return nil, net.ErrClosed
	}
}
func (f *fakeListener) Close() error   { f.once.Do(func() { close(f.done) }); return nil }
func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443} }

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// dial queues a connection from ip to f and returns the client end.
func (f *fakeListener) dial(ip string) net.Conn {
	client, server := net.Pipe()
	f.conns <- addrConn{Conn: server, remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
	return client
}

// closedAtOnce reports whether the server closed c's other end.
func closedAtOnce(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe)
}

type refusals struct {
	mu  sync.Mutex
	got []string
}

func (r *refusals) add(listener, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, listener+"/"+reason)
}

func (r *refusals) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func TestPerSourceLimit(t *testing.T) {
	var ref refusals
	lim := connlimit.New(connlimit.Options{Max: 100, PerSource: 2, Refused: ref.add})
	f := newFake()
	ln := lim.Wrap(f, "https")
	defer ln.Close()

	var accepted []net.Conn
	accept := func() net.Conn {
		t.Helper()
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		accepted = append(accepted, c)
		return c
	}
	f.dial("127.0.0.1")
	f.dial("::ffff:127.0.0.1") // the same source, IPv4-mapped
	accept()
	accept()
	over := f.dial("127.0.0.1")
	other := f.dial("127.0.0.2")
	c := accept() // the third from 127.0.0.1 is refused inside Accept
	if got := c.RemoteAddr().String(); got != "127.0.0.2:40000" {
		t.Fatalf("accepted %s, want the connection from 127.0.0.2", got)
	}
	if !closedAtOnce(t, over) {
		t.Error("the connection over the per-source limit was not closed")
	}
	if got := ref.list(); len(got) != 1 || got[0] != "https/source" {
		t.Errorf("refusals %v, want [https/source]", got)
	}
	go func() { // other's client end: the pipe is synchronous
		other.Write([]byte("x"))
	}()
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Errorf("the granted connection does not work: %v", err)
	}
	st := lim.Stats()
	if st.Open != 3 || st.Sources != 2 || st.RefusedSource != 1 || st.RefusedTotal != 0 {
		t.Errorf("stats %+v, want 3 open from 2 sources, 1 refused for its source", st)
	}
	if n := lim.Open(netip.MustParseAddr("127.0.0.1")); n != 2 {
		t.Errorf("open from 127.0.0.1: %d, want 2", n)
	}

	// Closing releases the slot (once, however often Close is called):
	// 127.0.0.1 may connect again.
	accepted[0].Close()
	accepted[0].Close()
	f.dial("127.0.0.1")
	accept()
	if n := lim.Open(netip.MustParseAddr("127.0.0.1")); n != 2 {
		t.Errorf("open from 127.0.0.1 after one closed and one more came: %d, want 2", n)
	}
}

func TestTotalLimitAcrossListeners(t *testing.T) {
	var ref refusals
	lim := connlimit.New(connlimit.Options{Max: 2, PerSource: 10, Refused: ref.add})
	f1, f2 := newFake(), newFake()
	https, mqtt := lim.Wrap(f1, "https"), lim.Wrap(f2, "mqtt")
	f1.dial("10.0.0.1")
	a, err := https.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f2.dial("10.0.0.2")
	if _, err := mqtt.Accept(); err != nil {
		t.Fatal(err)
	}
	over := f2.dial("10.0.0.3")
	got := make(chan net.Conn, 1)
	go func() {
		c, _ := mqtt.Accept()
		got <- c
	}()
	if !closedAtOnce(t, over) {
		t.Fatal("the connection over the total limit was not closed")
	}
	if r := ref.list(); len(r) != 1 || r[0] != "mqtt/total" {
		t.Errorf("refusals %v, want [mqtt/total]", r)
	}
	a.Close() // a slot is free: the next connection is granted
	f2.dial("10.0.0.3")
	select {
	case c := <-got:
		if c == nil {
			t.Fatal("Accept failed")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a connection was refused after a slot was released")
	}
	f2.Close()
	if _, err := mqtt.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener: %v, want net.ErrClosed", err)
	}
}

// No leak: after many connections from many sources open and close, in any
// order and concurrently, nothing is counted.
func TestCountsReleased(t *testing.T) {
	lim := connlimit.New(connlimit.Options{Max: 1000, PerSource: 5})
	f := newFake()
	ln := lim.Wrap(f, "https")
	var wg sync.WaitGroup
	for i := range 500 {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i % 7), 1}).String()
		client := f.dial(ip)
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			c.Close()
			client.Close()
		})
		if i%7 == 6 {
			wg.Wait()
		}
	}
	wg.Wait()
	if st := lim.Stats(); st.Open != 0 || st.Sources != 0 {
		t.Errorf("after every connection closed: %+v, want nothing open", st)
	}
}
