package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/wire"
)

// The legitimate devices of these tests connect from 127.0.0.2, the
// attackers from 127.0.0.1: two sources on one machine.
var (
	attacker = netip.MustParseAddr("127.0.0.1")
	devices  = netip.MustParseAddr("127.0.0.2")
)

// dialFrom opens a TCP connection from the loopback address src.
func dialFrom(src netip.Addr, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// clientFrom is an HTTPS client of s whose connections come from src;
// every client has its own connections, as separate devices do.
func clientFrom(t *testing.T, s *server, src netip.Addr) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		DialContext: d.DialContext, TLSClientConfig: s.clientTLS(t), ForceAttemptHTTP2: true}}
}

// serverTLS is a client TLS configuration trusting s, for raw connections.
func serverTLS(t *testing.T, s *server) *tls.Config {
	c := s.clientTLS(t).Clone()
	c.ServerName = "localhost"
	return c
}

// waitClosed reads c until the server closes it or within elapses; it
// reports how long that took and whether the server closed it.
func waitClosed(c net.Conn, within time.Duration) (time.Duration, bool) {
	began := time.Now()
	c.SetReadDeadline(began.Add(within))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return time.Since(began), false
		}
		return time.Since(began), true // EOF or reset
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

func metricsText(t *testing.T, s *server) string {
	t.Helper()
	resp, err := http.Get("http://" + s.adminLn.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// registerFrom registers the enrollment e over HTTPS with connections from src.
func registerFrom(t *testing.T, s *server, src netip.Addr, id, key string) error {
	c := s.client(clientFrom(t, s, src))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := c.Register(ctx, id, device.SymmetricKey(key), nil)
	if err == nil && res.Status != "assigned" {
		err = fmt.Errorf("%s: status %s", id, res.Status)
	}
	return err
}

// TestConnectionLimitPerSource: with 4 connections per source, idle TCP
// connections from 127.0.0.1 to the HTTPS and MQTT ports (one limit for
// both) fill its share; the next is closed at once, before TLS, on either
// port, and counted; devices from 127.0.0.2 still register and reach MQTT.
// When the idle connections close, their slots are released.
func TestConnectionLimitPerSource(t *testing.T) {
	s, _ := startServer(t, t.TempDir(), "limits: { maxConnectionsPerSource: 4 }\n")
	e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment("limited-dev"))
	key := string(e.Attestation.SymmetricKey.PrimaryKey)
	https, mqtt := s.httpsLn.Addr().String(), s.mqtt.Addr().String()

	var idle []net.Conn
	for _, addr := range []string{https, https, mqtt, mqtt} {
		c, err := dialFrom(attacker, addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	eventually(t, "the 4 idle connections are accepted", func() bool { return s.connLimits.Open(attacker) == 4 })
	for _, addr := range []string{https, mqtt} {
		c, err := dialFrom(attacker, addr)
		if err != nil {
			t.Fatal(err)
		}
		if d, closed := waitClosed(c, 3*time.Second); !closed || d > time.Second {
			t.Errorf("%s: the 5th connection from one source: closed %v after %s, want closed at once", addr, closed, d)
		}
		c.Close()
	}
	m := metricsText(t, s)
	for _, want := range []string{`dps_connections_refused_total{listener="https",reason="source"} 1`, `dps_connections_refused_total{listener="mqtt",reason="source"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Another source is not affected: it registers, and completes a TLS
	// handshake on the MQTT port.
	if err := registerFrom(t, s, devices, "limited-dev", key); err != nil {
		t.Errorf("a device from another source: %v", err)
	}
	raw, err := dialFrom(devices, mqtt)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, serverTLS(t, s))
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Errorf("MQTT TLS handshake from another source: %v", err)
	}
	tc.Close()

	for _, c := range idle {
		c.Close()
	}
	eventually(t, "the closed connections' slots are released", func() bool { return s.connLimits.Open(attacker) == 0 })
	if err := registerFrom(t, s, attacker, "limited-dev", key); err != nil {
		t.Errorf("the first source, its connections closed: %v", err)
	}
}

// TestSlowClientsAreClosed: on both listeners a client that opens TCP and
// sends nothing, or stalls in the TLS handshake, is closed after
// tlsHandshakeTimeout; an HTTPS client that sends its headers a byte at a
// time, and an MQTT client that never sends CONNECT, after headerTimeout.
func TestSlowClientsAreClosed(t *testing.T) {
	s, _ := startServer(t, t.TempDir(), "limits: { tlsHandshakeTimeout: 1s, headerTimeout: 1500ms }\n")
	https, mqtt := s.httpsLn.Addr().String(), s.mqtt.Addr().String()
	clientHello := []byte{0x16, 0x03, 0x01, 0x00, 0xc8, 0x01} // a record header and the first byte of a ClientHello
	cases := []struct {
		name, addr string
		tls        bool
		dribble    []byte // sent a byte every 200 ms
		send       []byte // sent once
		min, max   time.Duration
	}{
		{name: "https silent", addr: https, min: 800 * time.Millisecond, max: 2500 * time.Millisecond},
		{name: "https mid-handshake", addr: https, send: clientHello, min: 800 * time.Millisecond, max: 2500 * time.Millisecond},
		// net/http: the handshake and the headers share min(1s, 1.5s).
		{name: "https slow headers", addr: https, tls: true, dribble: []byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"), min: 800 * time.Millisecond, max: 2500 * time.Millisecond},
		{name: "mqtt silent", addr: mqtt, min: 800 * time.Millisecond, max: 2500 * time.Millisecond},
		{name: "mqtt mid-handshake", addr: mqtt, send: clientHello, min: 800 * time.Millisecond, max: 2500 * time.Millisecond},
		{name: "mqtt no CONNECT", addr: mqtt, tls: true, min: 1300 * time.Millisecond, max: 3 * time.Second},
		{name: "mqtt slow CONNECT", addr: mqtt, tls: true, dribble: []byte{0x10, 0x7f, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 5, 'a', 'b', 'c', 'd', 'e', 'f', 'g'}, min: 1300 * time.Millisecond, max: 3 * time.Second},
	}
	var wg sync.WaitGroup
	for _, tc := range cases {
		wg.Go(func() {
			raw, err := dialFrom(devices, tc.addr)
			if err != nil {
				t.Error(err)
				return
			}
			began := time.Now()
			var c net.Conn = raw
			if tc.tls {
				tlc := tls.Client(raw, serverTLS(t, s))
				if err := tlc.Handshake(); err != nil {
					t.Errorf("%s: handshake: %v", tc.name, err)
					return
				}
				c = tlc
			}
			defer c.Close()
			c.Write(tc.send)
			go func() {
				for _, b := range tc.dribble {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					time.Sleep(200 * time.Millisecond)
				}
			}()
			_, closed := waitClosed(c, 6*time.Second)
			d := time.Since(began)
			if !closed || d < tc.min || d > tc.max {
				t.Errorf("%s: closed %v after %s, want closed after %s to %s", tc.name, closed, d.Round(time.Millisecond), tc.min, tc.max)
			}
		})
	}
	wg.Wait()
}

// raiseFileLimit lifts the soft limit on open files to the hard limit: the
// flood tests hold thousands of connections, both ends in this process.
func raiseFileLimit(t *testing.T, need uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur < need {
		rl.Cur = min(rl.Max, need)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			t.Fatal(err)
		}
	}
	if rl.Cur < need {
		t.Fatalf("RLIMIT_NOFILE is %d, the test needs %d", rl.Cur, need)
	}
}

// startLimited is startQuiet with the MQTT and admin listeners.
func startLimited(t *testing.T, extra string) *server {
	t.Helper()
	dir := t.TempDir()
	yaml := "idScope: " + testScope + "\ndataDir: " + dir + "\nlisten: { https: \"127.0.0.1:0\", mqtt: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\nretryAfterSeconds: 1\nlog: { level: error }\n" +
		"linkedHubs:\n  - { hostName: hub-a.example.net }\n" + fmt.Sprintf(policiesYAML, ownerKey, readerKey) +
		"throttling: { device: { pollsPer10s: 0 } }\n" + extra
	path := filepath.Join(dir, "dpsd.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	s, err := start(context.Background(), cfg, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// legitimateLoad runs rate full registrations (register, then polls until
// assigned) per second for d, each device with its own connections from
// 127.0.0.2, and returns their outcome.
func legitimateLoad(t *testing.T, s *server, groupKey, prefix string, rate int, d time.Duration) *outcome {
	var o outcome
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i, end := 0, time.Now().Add(d); time.Now().Before(end); i++ {
		<-tick.C
		wg.Go(func() {
			id := fmt.Sprintf("%s-%05d", prefix, i)
			k, _ := device.DeriveKey(groupKey, id)
			hc := clientFrom(t, s, devices)
			defer hc.CloseIdleConnections()
			c := s.client(hc)
			c.PollInterval = 50 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			began := time.Now()
			res, err := c.Register(ctx, id, device.SymmetricKey(k), json.RawMessage(`{"model":"m"}`))
			if err == nil && res.Status != "assigned" {
				err = fmt.Errorf("%s: %s", id, res.Status)
			}
			o.add(time.Since(began), err)
		})
	}
	wg.Wait()
	return &o
}

// groupKey creates a symmetric-key enrollment group for the load.
func loadGroup(t *testing.T, s *server) string {
	t.Helper()
	hc := clientFrom(t, s, devices)
	svc := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	g, err := svc.PutGroup(context.Background(), wire.EnrollmentGroup{EnrollmentGroupID: "load", Attestation: symmetric()}, "")
	if err != nil {
		t.Fatal(err)
	}
	return g.Attestation.SymmetricKey.PrimaryKey
}

// attack runs n workers from 127.0.0.1 against addrs (round robin) until
// stop is closed; each opens a connection, runs fn on it and opens the next
// once the server has closed it (after a short pause, so that refused
// connections are retried about every 100 ms, not in a spin).
// It returns how many connections were opened.
func attack(n int, addrs []string, stop <-chan struct{}, fn func(net.Conn)) (wait func() int64) {
	var opened atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		addr := addrs[i%len(addrs)]
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := dialFrom(attacker, addr)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				opened.Add(1)
				go func() { <-stop; c.Close() }()
				fn(c)
				c.Close()
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	return func() int64 { wg.Wait(); return opened.Load() }
}

const (
	legitRate     = 20 // registrations per second
	legitDuration = 10 * time.Second
)

// checkLoad fails the test unless every registration of o was assigned.
func checkLoad(t *testing.T, name string, o *outcome) {
	t.Helper()
	if o.fail > 0 || o.ok < legitRate*int(legitDuration/time.Second)*9/10 {
		t.Errorf("%s: %s (first error: %s), want every registration assigned", name, o, o.firstErr)
	}
}

// TestLoadConnectionFlood: 2,000 connections from 127.0.0.1, half to the
// HTTPS port and half to the MQTT port, each idle until dps closes it and
// then opened again, against a per-source limit of 100, while 20 devices
// per second register from 127.0.0.2 for 10 s; then the same load without
// the flood. Every registration is assigned in both; the log shows the
// p99 of each (docs/operations.md).
func TestLoadConnectionFlood(t *testing.T) {
	skipUnderRace(t)
	raiseFileLimit(t, 8192)
	s := startLimited(t, "limits: { maxConnectionsPerSource: 100 }\n")
	key := loadGroup(t, s)
	quiet := legitimateLoad(t, s, key, "quiet", legitRate, legitDuration)

	stop := make(chan struct{})
	wait := attack(2000, []string{s.httpsLn.Addr().String(), s.mqtt.Addr().String()}, stop, func(c net.Conn) {
		waitClosed(c, time.Minute)
	})
	time.Sleep(time.Second) // the flood is under way
	flooded := legitimateLoad(t, s, key, "flood", legitRate, legitDuration)
	st := s.connLimits.Stats()
	close(stop)
	opened := wait()
	t.Logf("without flood: %s; during a flood of 2000 connections from one source (%d opened, %d refused for the per-source limit of 100): %s",
		quiet, opened, st.RefusedSource, flooded)
	checkLoad(t, "without flood", quiet)
	checkLoad(t, "during the flood", flooded)
	if st.RefusedSource < 1000 {
		t.Errorf("only %d flood connections refused: the flood did not reach the limit", st.RefusedSource)
	}
}

// TestLoadSlowloris: 500 connections from 127.0.0.1 (300 to HTTPS, 200 to
// MQTT) complete TLS and then send one byte every 2 s (HTTP headers, an
// MQTT CONNECT), each opened again once dps closes it, with the default
// limits (1,000 per source, 10 s header timeout), while 20 devices per
// second register from 127.0.0.2 for 10 s. Every registration is assigned
// and dps closes the slow connections after the header timeout.
func TestLoadSlowloris(t *testing.T) {
	skipUnderRace(t)
	raiseFileLimit(t, 8192)
	s := startLimited(t, "")
	key := loadGroup(t, s)
	quiet := legitimateLoad(t, s, key, "quiet", legitRate, legitDuration)

	var closedByServer atomic.Int64
	var lifetimes sync.Mutex
	var longest time.Duration
	stop := make(chan struct{})
	slow := func(payload []byte) func(net.Conn) {
		return func(raw net.Conn) {
			c := tls.Client(raw, serverTLS(t, s))
			c.SetDeadline(time.Now().Add(15 * time.Second))
			if c.Handshake() != nil {
				return
			}
			began := time.Now()
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, closed := waitClosed(c, time.Minute)
				if closed {
					closedByServer.Add(1)
					lifetimes.Lock()
					longest = max(longest, time.Since(began))
					lifetimes.Unlock()
				}
			}()
			for i := 0; ; i = (i + 1) % len(payload) {
				select {
				case <-done:
					return
				case <-stop:
					return
				case <-time.After(2 * time.Second):
				}
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(payload[i : i+1]); err != nil {
					<-done
					return
				}
			}
		}
	}
	waitHTTPS := attack(300, []string{s.httpsLn.Addr().String()}, stop, slow([]byte("POST /0ne00000000/registrations/x/register?api-version=2021-06-01 HTTP/1.1\r\nHost: localhost\r\n")))
	waitMQTT := attack(200, []string{s.mqtt.Addr().String()}, stop, slow([]byte{0x10, 0x7f, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30}))
	time.Sleep(3 * time.Second) // the slow connections are open
	during := legitimateLoad(t, s, key, "slow", legitRate, legitDuration)
	close(stop)
	opened := waitHTTPS() + waitMQTT()
	lifetimes.Lock()
	t.Logf("without slowloris: %s; during a slowloris of 500 connections from one source (%d opened, %d closed by dps, the longest after %s): %s",
		quiet, opened, closedByServer.Load(), longest.Round(time.Millisecond), during)
	lifetimes.Unlock()
	checkLoad(t, "without slowloris", quiet)
	checkLoad(t, "during the slowloris", during)
	if closedByServer.Load() < 400 {
		t.Errorf("dps closed %d slow connections, want every one of the 500 closed after the header timeout", closedByServer.Load())
	}
	if longest > 13*time.Second {
		t.Errorf("a slow connection stayed open %s, want at most the header timeout (10s) and a little", longest)
	}
}
