package main

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/opendps/dps/internal/sas"
)

// Helpers of the routing tests under load: devices publishing numbered
// QoS 1 telemetry, the check that every acknowledged message reached an
// endpoint in order per device, the routes' metrics, and the endpoint
// servers (Mosquitto) the tests start.

// loadDevice is a device of a routeLoad: its ID and symmetric key.
type loadDevice struct{ id, key string }

// routeLoad is devices publishing QoS 1 telemetry to a hub over MQTT, each
// message numbered by a per-device counter (application property n, from
// 0 up, never reused across reconnections).
type routeLoad struct {
	mu    sync.Mutex
	acked map[string]map[int]bool // device → n a PUBACK answered
	sent  atomic.Int64
	ok    atomic.Int64
	stop  atomic.Bool
	wg    sync.WaitGroup
}

// startRouteLoad connects each device to the MQTT listener at addr (TLS,
// host name localhost) and publishes until stopLoad, up to inflight
// messages in flight per device with pause between publishes. A device
// whose connection drops (dpsd killed) reconnects every 200 ms and goes on
// counting.
func startRouteLoad(t *testing.T, addr func() string, roots *tls.Config, devices []loadDevice, inflight int, pause time.Duration) *routeLoad {
	l := &routeLoad{acked: map[string]map[int]bool{}}
	for _, d := range devices {
		l.acked[d.id] = map[int]bool{}
		l.wg.Go(func() { l.device(t, addr, roots, d, inflight, pause) })
	}
	return l
}

func (l *routeLoad) device(t *testing.T, addr func() string, roots *tls.Config, d loadDevice, inflight int, pause time.Duration) {
	key, err := base64.StdEncoding.DecodeString(d.key)
	if err != nil {
		t.Error(err)
		return
	}
	n := 0
	for !l.stop.Load() {
		opts := paho.NewClientOptions().AddBroker("tls://" + addr()).SetClientID(d.id).
			SetUsername("localhost/" + d.id + "/?api-version=2021-04-12").
			SetPassword(sas.New("localhost/devices/"+d.id, key, "", time.Now().Add(time.Hour))).
			SetTLSConfig(&tls.Config{RootCAs: roots.RootCAs, ServerName: "localhost"}).
			SetAutoReconnect(false).SetCleanSession(true).SetProtocolVersion(4).SetKeepAlive(60 * time.Second).
			SetWriteTimeout(5 * time.Second).SetConnectTimeout(2 * time.Second)
		mc := paho.NewClient(opts)
		if tok := mc.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		slots := make(chan struct{}, inflight)
		var waits sync.WaitGroup
		for !l.stop.Load() && mc.IsConnectionOpen() {
			slots <- struct{}{}
			i := n
			n++
			tok := mc.Publish(fmt.Sprintf("devices/%s/messages/events/n=%d", d.id, i), 1, false, fmt.Sprintf(`{"n":%d}`, i))
			l.sent.Add(1)
			waits.Go(func() {
				defer func() { <-slots }()
				if tok.WaitTimeout(20*time.Second) && tok.Error() == nil {
					l.mu.Lock()
					l.acked[d.id][i] = true
					l.mu.Unlock()
					l.ok.Add(1)
				}
			})
			if pause > 0 {
				time.Sleep(pause)
			}
		}
		waits.Wait()
		mc.Disconnect(0)
	}
}

// stopLoad ends the publishing and waits for the outstanding PUBACKs.
func (l *routeLoad) stopLoad() {
	l.stop.Store(true)
	l.wg.Wait()
}

// arrival is one message as an endpoint's consumer received it.
type arrival struct {
	device string
	n      int
}

// checkArrivals fails t unless every acknowledged message is in got and,
// per device, the first arrivals come in counter order (a message
// dpsd stored without its PUBACK reaching the device may arrive too).
// It returns the number of duplicates (messages that arrived again).
func (l *routeLoad) checkArrivals(t *testing.T, got []arrival) (dups int) {
	t.Helper()
	seen := map[arrival]bool{}
	last := map[string]int{}
	reordered := 0
	for _, a := range got {
		if seen[a] {
			dups++
			continue
		}
		seen[a] = true
		if prev, ok := last[a.device]; ok && a.n < prev {
			if reordered++; reordered <= 10 {
				t.Errorf("%s: message %d arrived (first) after message %d", a.device, a.n, prev)
			}
		}
		last[a.device] = a.n
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lost := 0
	for dev, ns := range l.acked {
		for n := range ns {
			if !seen[arrival{dev, n}] {
				if lost++; lost <= 10 {
					t.Errorf("%s: message %d was acknowledged and never arrived", dev, n)
				}
			}
		}
	}
	if lost > 0 || reordered > 0 {
		t.Errorf("%d acknowledged messages lost, %d reordered", lost, reordered)
	}
	return dups
}

// missing is how many acknowledged messages are not in got yet.
func (l *routeLoad) missing(got []arrival) int {
	seen := make(map[arrival]bool, len(got))
	for _, a := range got {
		seen[a] = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	m := 0
	for dev, ns := range l.acked {
		for n := range ns {
			if !seen[arrival{dev, n}] {
				m++
			}
		}
	}
	return m
}

// waitArrived polls read until every acknowledged message arrived or the
// time is up, and returns the last read.
func (l *routeLoad) waitArrived(t *testing.T, within time.Duration, read func() []arrival) []arrival {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := read()
		m := l.missing(got)
		if m == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Errorf("%d acknowledged messages had not arrived after %v", m, within)
			return got
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func counter(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// routeMetric sums the samples of a metric whose labels include
// route="<route>" on the admin listener's /metrics.
func routeMetric(t *testing.T, admin, name, route string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, `route="`+route+`"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum, found = sum+v, true
	}
	return sum, found
}

// mosquitto is Debian's Mosquitto broker started by a test, with
// persistence, on a fixed loopback port.
type mosquitto struct {
	t    testing.TB
	dir  string
	port int
	cmd  *exec.Cmd
}

func startMosquitto(t testing.TB) *mosquitto {
	t.Helper()
	bin := "/usr/sbin/mosquitto"
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("mosquitto"); err != nil {
			t.Fatal("the mosquitto binary is missing: this test needs Debian's mosquitto (make deps, or apt-get install -y mosquitto)")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{t: t, dir: t.TempDir(), port: l.Addr().(*net.TCPAddr).Port}
	l.Close()
	conf := fmt.Sprintf("user root\npersistence true\npersistence_location %s/\nautosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 0\n"+
		"set_tcp_nodelay true\nlog_dest file %s/mosquitto.log\nlistener %d 127.0.0.1\nallow_anonymous true\n", m.dir, m.dir, m.port)
	if err := os.WriteFile(filepath.Join(m.dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.start(bin)
	t.Cleanup(m.stop)
	return m
}

func (m *mosquitto) start(bin string) {
	m.t.Helper()
	if bin == "" {
		bin = m.cmd.Path
	}
	m.cmd = exec.Command(bin, "-c", filepath.Join(m.dir, "mosquitto.conf"))
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", m.addr())
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(m.dir, "mosquitto.log"))
			m.t.Fatalf("mosquitto did not listen on %d: %v\n%s", m.port, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the broker by its PID with SIGTERM (it saves its persistent
// sessions), SIGKILL after 10 s.
func (m *mosquitto) stop() {
	if m.cmd.ProcessState != nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-done
	}
}

func (m *mosquitto) addr() string { return fmt.Sprintf("127.0.0.1:%d", m.port) }
