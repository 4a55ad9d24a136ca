// Package connlimit bounds the connections a server accepts: at most Max
// open at once over every listener it wraps, and at most PerSource from one
// source IP address. A connection over a limit is closed as soon as it is
// accepted, before any byte is read or written (so before TLS): it costs
// one accept and one close. Counts are released when a connection closes.
package connlimit

import (
	"net"
	"net/netip"
	"sync"
)

// Reasons a connection is refused, as passed to Options.Refused.
const (
	ReasonTotal  = "total"  // Max connections were open
	ReasonSource = "source" // PerSource connections from its address were open
)

// Options configure a Limiter. A limit of 0 or less is no limit.
type Options struct {
	Max       int
	PerSource int
	// Refused, when set, is called for every refused connection with the
	// name of its listener and the reason (ReasonTotal, ReasonSource).
	// It must not block.
	Refused func(listener, reason string)
}

// Limiter keeps the counts shared by the listeners it wraps.
type Limiter struct {
	o Options

	mu      sync.Mutex
	open    int
	sources map[netip.Addr]int
	refused map[string]int64 // by reason
}

// New returns a Limiter.
func New(o Options) *Limiter {
	return &Limiter{o: o, sources: map[netip.Addr]int{}, refused: map[string]int64{}}
}

// Stats is a snapshot of a Limiter's counts.
type Stats struct {
	Open    int // connections open now
	Sources int // source addresses with at least one open connection
	// RefusedTotal and RefusedSource count the connections refused since
	// the Limiter was made, for each limit.
	RefusedTotal, RefusedSource int64
}

// Stats reports the counts.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Open: l.open, Sources: len(l.sources), RefusedTotal: l.refused[ReasonTotal], RefusedSource: l.refused[ReasonSource]}
}

// Open reports how many connections from addr are open.
func (l *Limiter) Open(addr netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sources[addr.Unmap()]
}

// acquire takes a slot for a connection from src; reason is "" when
// granted.
func (l *Limiter) acquire(src netip.Addr) (reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.o.Max > 0 && l.open >= l.o.Max:
		reason = ReasonTotal
	case l.o.PerSource > 0 && src.IsValid() && l.sources[src] >= l.o.PerSource:
		reason = ReasonSource
	default:
		l.open++
		if src.IsValid() {
			l.sources[src]++
		}
		return ""
	}
	l.refused[reason]++
	return reason
}

func (l *Limiter) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if !src.IsValid() {
		return
	}
	if n := l.sources[src] - 1; n > 0 {
		l.sources[src] = n
	} else {
		delete(l.sources, src)
	}
}

// Wrap returns ln limited by l; name identifies it to Options.Refused.
// Accept returns only granted connections: refused ones are closed and
// counted inside it, and it goes on accepting.
func (l *Limiter) Wrap(ln net.Listener, name string) net.Listener {
	return &listener{Listener: ln, l: l, name: name}
}

type listener struct {
	net.Listener
	l    *Limiter
	name string
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := source(c.RemoteAddr())
		if reason := ln.l.acquire(src); reason != "" {
			// Counted before the close, so that whoever sees the close
			// also sees the refusal counted.
			if ln.l.o.Refused != nil {
				ln.l.o.Refused(ln.name, reason)
			}
			c.Close()
			continue
		}
		return &conn{Conn: c, l: ln.l, src: src}, nil
	}
}

// source is the IP address of a remote address (IPv4-mapped IPv6
// addresses as IPv4); invalid when the address has none (a pipe, a Unix
// socket), which only Max limits.
func source(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case interface{ AddrPort() netip.AddrPort }:
		return a.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// conn releases its slot when first closed.
type conn struct {
	net.Conn
	l    *Limiter
	src  netip.Addr
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.src) })
	return err
}

// NetConn is the accepted connection.
func (c *conn) NetConn() net.Conn { return c.Conn }
