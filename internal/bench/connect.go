package bench

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/sas"
)

// ConnectOptions configure a connection run (`dpsctl bench hub --idle`):
// len(IDs) TLS MQTT device connections opened to Address, Concurrency at a
// time, and held idle for Hold. With HandshakeOnly the connections stop
// after the TLS handshake (no MQTT CONNECT): the TLS-handshake ceiling of
// the same listener.
type ConnectOptions struct {
	Address  string // host:port of the MQTT endpoint
	Host     string // the hub's host name (the username's first segment)
	GroupKey string // base64; device keys are derived from it (device.DeriveKey)
	IDs      []string
	TLS      *tls.Config
	// SourceAddresses are the local IP addresses the connections are made
	// from, in turn ("" or none: the system's choice); one source address
	// has only the ephemeral port range's ports towards one listener.
	SourceAddresses []string
	// Concurrency bounds the connects under way (default 32).
	Concurrency   int
	HandshakeOnly bool
	// Hold is how long the connections stay open once all are up; at its
	// end each is checked to be still open.
	Hold time.Duration
	// KeepAlive is the MQTT keep-alive sent in CONNECT (default 20 minutes:
	// no ping is needed while held).
	KeepAlive time.Duration
	// PID, when positive, is the server's process: its VmRSS and VmHWM
	// are read from /proc/PID/status once all connections are up and at
	// the end of Hold.
	PID      int
	Progress io.Writer
}

// ProcMemory is a process's memory from /proc/PID/status, in MiB.
type ProcMemory struct {
	RSSMiB float64 `json:"vmRssMiB"`
	HWMMiB float64 `json:"vmHwmMiB"`
}

// ConnectSummary is the result of a connection run.
type ConnectSummary struct {
	// Mode is "mqtt" (TLS, CONNECT, CONNACK accepted) or "tls-handshake".
	Mode            string   `json:"mode"`
	Devices         int      `json:"devices"`
	Connected       int      `json:"connected"`
	Concurrency     int      `json:"concurrency"`
	SourceAddresses []string `json:"sourceAddresses"`
	// Seconds is from the first connect's start until the last was up.
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"connectionsPerSecond"`
	// LatencyMS is per connection: dial, TLS handshake and (mqtt) CONNECT
	// until CONNACK.
	LatencyMS   Latency `json:"connectLatencyMs"`
	HeldSeconds float64 `json:"heldSeconds"`
	// StillOpen is how many of the connections were open at the end of
	// the hold.
	StillOpen int            `json:"stillOpen"`
	Failures  map[string]int `json:"failures"`
	// ServerUp and ServerEnd are the server's memory once all were up and
	// at the end of the hold (with PID).
	ServerUp  *ProcMemory `json:"serverMemoryUp,omitempty"`
	ServerEnd *ProcMemory `json:"serverMemoryEnd,omitempty"`
	// Client is this load generator's own memory at the end.
	Client *ProcMemory `json:"clientMemory,omitempty"`
}

func (s ConnectSummary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hub connections (%s), %d devices, %d at a time, from %s\n", s.Mode, s.Devices, s.Concurrency, strings.Join(s.SourceAddresses, ", "))
	fmt.Fprintf(&b, "  connected:        %d of %d in %.2fs\n", s.Connected, s.Devices, s.Seconds)
	fmt.Fprintf(&b, "  connections/s:    %.0f\n", s.PerSecond)
	fmt.Fprintf(&b, "  connect (ms):     p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n", s.LatencyMS.P50, s.LatencyMS.P90, s.LatencyMS.P99, s.LatencyMS.Max)
	fmt.Fprintf(&b, "  held:             %.1fs, %d still open\n", s.HeldSeconds, s.StillOpen)
	if s.ServerUp != nil {
		fmt.Fprintf(&b, "  server memory:    all up VmRSS %.0f MiB; end VmRSS %.0f MiB, VmHWM %.0f MiB\n", s.ServerUp.RSSMiB, s.ServerEnd.RSSMiB, s.ServerEnd.HWMMiB)
	}
	if s.Client != nil {
		fmt.Fprintf(&b, "  client memory:    VmRSS %.0f MiB, VmHWM %.0f MiB\n", s.Client.RSSMiB, s.Client.HWMMiB)
	}
	if len(s.Failures) > 0 {
		fmt.Fprintf(&b, "  failures:         %v\n", s.Failures)
	}
	return b.String()
}

// RunConnect opens the connections, holds them, checks them and closes
// them.
func RunConnect(ctx context.Context, o ConnectOptions) (ConnectSummary, error) {
	if len(o.IDs) == 0 {
		return ConnectSummary{}, errors.New("bench: connection runs need devices")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 20 * time.Minute
	}
	if len(o.SourceAddresses) == 0 {
		o.SourceAddresses = []string{""}
	}
	s := ConnectSummary{Mode: "mqtt", Devices: len(o.IDs), Concurrency: o.Concurrency, SourceAddresses: o.SourceAddresses, Failures: map[string]int{}}
	if o.HandshakeOnly {
		s.Mode = "tls-handshake"
	}
	dialers := make([]*tls.Dialer, len(o.SourceAddresses))
	for i, a := range o.SourceAddresses {
		nd := &net.Dialer{}
		if a != "" {
			ip := net.ParseIP(a)
			if ip == nil {
				return s, fmt.Errorf("bench: source address %q is not an IP address", a)
			}
			nd.LocalAddr = &net.TCPAddr{IP: ip}
		}
		cfg := o.TLS.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = o.Host
		}
		dialers[i] = &tls.Dialer{NetDialer: nd, Config: cfg}
	}
	conns := make([]net.Conn, len(o.IDs))
	lat := make([]time.Duration, len(o.IDs))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		up   atomic.Int64
		sem  = make(chan struct{}, o.Concurrency)
		t0   = time.Now()
		stop = make(chan struct{})
	)
	if o.Progress != nil {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					n := up.Load()
					fmt.Fprintf(o.Progress, "\r%d connected, %.0f/s   ", n, float64(n)/time.Since(t0).Seconds())
				}
			}
		}()
	}
	for i, id := range o.IDs {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			start := time.Now()
			c, err := connectOne(ctx, dialers[i%len(dialers)], o, id)
			if err != nil {
				mu.Lock()
				s.Failures[failureText(err)]++
				mu.Unlock()
				return
			}
			lat[i] = time.Since(start)
			conns[i] = c
			up.Add(1)
		})
	}
	wg.Wait()
	close(stop)
	elapsed := time.Since(t0)
	if o.Progress != nil {
		fmt.Fprintln(o.Progress)
	}
	var all []time.Duration
	for i, c := range conns {
		if c != nil {
			all = append(all, lat[i])
		}
	}
	slices.Sort(all)
	s.Connected = len(all)
	s.Seconds = elapsed.Seconds()
	s.PerSecond = float64(s.Connected) / elapsed.Seconds()
	s.LatencyMS = percentiles(all)
	if o.PID > 0 {
		m, err := readProcMemory(o.PID)
		if err != nil {
			return s, err
		}
		s.ServerUp = &m
	}
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "%d of %d connected in %.2fs; holding %s\n", s.Connected, s.Devices, s.Seconds, o.Hold)
	}
	held := time.Now()
	select {
	case <-time.After(o.Hold):
	case <-ctx.Done():
	}
	s.HeldSeconds = time.Since(held).Seconds()
	s.StillOpen = countOpen(conns)
	if o.PID > 0 {
		m, err := readProcMemory(o.PID)
		if err != nil {
			return s, err
		}
		s.ServerEnd = &m
	}
	if m, err := readProcMemory(os.Getpid()); err == nil {
		s.Client = &m
	}
	return s, ctx.Err()
}

// connectOne dials and completes the TLS handshake and, unless
// HandshakeOnly, sends CONNECT with a SAS token and waits for an accepting
// CONNACK.
func connectOne(ctx context.Context, d *tls.Dialer, o ConnectOptions, id string) (net.Conn, error) {
	var password string
	if !o.HandshakeOnly {
		key, err := device.DeriveKey(o.GroupKey, id)
		if err != nil {
			return nil, err
		}
		raw, err := base64.StdEncoding.DecodeString(key)
		if err != nil {
			return nil, err
		}
		password = sas.New(o.Host+"/devices/"+id, raw, "", time.Now().Add(2*time.Hour)) // a device key: no skn

	}
	c, err := d.DialContext(ctx, "tcp", o.Address)
	if err != nil {
		return nil, err
	}
	if o.HandshakeOnly {
		return c, nil
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	username := o.Host + "/" + id + "/?api-version=" + device.HubAPIVersion + "&DeviceClientType=" + url.QueryEscape("opendps-bench/1")
	if _, err := c.Write(connectPacket(id, username, password, o.KeepAlive)); err != nil {
		c.Close()
		return nil, err
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		c.Close()
		return nil, fmt.Errorf("CONNACK: unexpected packet % x", ack)
	}
	if ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("CONNACK: refused, return code %d", ack[3])
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// failureText is err without the connection's addresses, so that the
// failures of many connections add up.
func failureText(err error) string {
	if oe, ok := errors.AsType[*net.OpError](err); ok {
		return oe.Op + ": " + oe.Err.Error()
	}
	return firstLine(err.Error())
}

// connectPacket is an MQTT 3.1.1 CONNECT with a clean session, a user
// name and a password.
func connectPacket(clientID, username, password string, keepAlive time.Duration) []byte {
	str := func(b []byte, s string) []byte { return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...) }
	ka := min(keepAlive/time.Second, 65535)
	body := str(nil, "MQTT")
	body = append(body, 4, 0xC2) // level 4; user name, password, clean session
	body = binary.BigEndian.AppendUint16(body, uint16(ka))
	body = str(body, clientID)
	body = str(body, username)
	body = str(body, password)
	p := []byte{0x10}
	for n := len(body); ; {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		p = append(p, b)
		if n == 0 {
			break
		}
	}
	return append(p, body...)
}

// countOpen reports how many connections are still open: a read that
// times out after a millisecond finds an open, idle connection; a closed
// one answers EOF (or an error) at once.
func countOpen(conns []net.Conn) int {
	var (
		open atomic.Int64
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 256)
	)
	for _, c := range conns {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			var b [1]byte
			_, err := c.Read(b[:])
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				open.Add(1)
			}
		})
	}
	wg.Wait()
	return int(open.Load())
}

// readProcMemory reads VmRSS and VmHWM from /proc/pid/status.
func readProcMemory(pid int) (ProcMemory, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ProcMemory{}, fmt.Errorf("bench: server memory: %w", err)
	}
	var m ProcMemory
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			return ProcMemory{}, fmt.Errorf("bench: /proc/%d/status %s: %q", pid, k, v)
		}
		if k == "VmRSS" {
			m.RSSMiB = kb / 1024
		} else {
			m.HWMMiB = kb / 1024
		}
	}
	return m, nil
}
