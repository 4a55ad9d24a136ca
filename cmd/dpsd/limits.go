package main

import (
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opendps/dps/internal/connlimit"
	"github.com/opendps/dps/internal/prom"
)

// LimitsConfig is dpsd's self-protection (the limits: key): connection
// limits on the HTTPS and MQTT listeners, and the timeouts of a new
// connection. A connection over a limit is closed as soon as it is
// accepted, before TLS, and counted in dps_connections_refused_total.
type LimitsConfig struct {
	// MaxConnections bounds the connections open at once on the HTTPS and
	// MQTT listeners together (default 100000; 0 = no limit).
	MaxConnections int `yaml:"maxConnections"`
	// MaxConnectionsPerSource bounds those from one source IP address
	// (default 1000; 0 = no limit). Devices behind one NAT share it.
	MaxConnectionsPerSource int `yaml:"maxConnectionsPerSource"`
	// TLSHandshakeTimeout closes a connection whose TLS handshake has not
	// finished this long after it was accepted (default 10s).
	TLSHandshakeTimeout time.Duration `yaml:"tlsHandshakeTimeout"`
	// HeaderTimeout closes an HTTPS connection whose request headers have
	// not all arrived this long after the request began, and an MQTT
	// connection that has not sent CONNECT this long after its handshake
	// (default 10s).
	HeaderTimeout time.Duration `yaml:"headerTimeout"`

	envErrs []string // DPSD_LIMITS_… values that do not parse
}

func defaultLimits() LimitsConfig {
	return LimitsConfig{MaxConnections: 100000, MaxConnectionsPerSource: 1000,
		TLSHandshakeTimeout: 10 * time.Second, HeaderTimeout: 10 * time.Second}
}

// applyLimitsEnv applies DPSD_LIMITS_MAXCONNECTIONS,
// DPSD_LIMITS_MAXCONNECTIONSPERSOURCE, DPSD_LIMITS_TLSHANDSHAKETIMEOUT and
// DPSD_LIMITS_HEADERTIMEOUT.
func applyLimitsEnv(c *LimitsConfig, getenv func(string) string) {
	for name, dst := range map[string]*int{
		"DPSD_LIMITS_MAXCONNECTIONS":          &c.MaxConnections,
		"DPSD_LIMITS_MAXCONNECTIONSPERSOURCE": &c.MaxConnectionsPerSource,
	} {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				c.envErrs = append(c.envErrs, name)
				continue
			}
			*dst = n
		}
	}
	for name, dst := range map[string]*time.Duration{
		"DPSD_LIMITS_TLSHANDSHAKETIMEOUT": &c.TLSHandshakeTimeout,
		"DPSD_LIMITS_HEADERTIMEOUT":       &c.HeaderTimeout,
	} {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				c.envErrs = append(c.envErrs, name)
				continue
			}
			*dst = d
		}
	}
}

func (c LimitsConfig) validate(bad func(key, format string, args ...any)) {
	for _, name := range c.envErrs {
		bad(name, "must be a number (connections) or a duration (timeouts)")
	}
	if c.MaxConnections < 0 || c.MaxConnections > 10_000_000 {
		bad("limits.maxConnections", "%d: must be between 0 (no limit) and 10000000", c.MaxConnections)
	}
	if c.MaxConnectionsPerSource < 0 || c.MaxConnectionsPerSource > 10_000_000 {
		bad("limits.maxConnectionsPerSource", "%d: must be between 0 (no limit) and 10000000", c.MaxConnectionsPerSource)
	}
	if c.TLSHandshakeTimeout < 100*time.Millisecond || c.TLSHandshakeTimeout > 5*time.Minute {
		bad("limits.tlsHandshakeTimeout", "%s: must be between 100ms and 5m", c.TLSHandshakeTimeout)
	}
	if c.HeaderTimeout < 100*time.Millisecond || c.HeaderTimeout > 5*time.Minute {
		bad("limits.headerTimeout", "%s: must be between 100ms and 5m", c.HeaderTimeout)
	}
}

// httpsHeaderTimeout is the HTTPS server's ReadHeaderTimeout. net/http
// bounds the TLS handshake by its smallest timeout, which is this one: the
// smaller of the two settings, so that neither is exceeded.
func (c LimitsConfig) httpsHeaderTimeout() time.Duration {
	return min(c.TLSHandshakeTimeout, c.HeaderTimeout)
}

// connLimiter is the limiter the HTTPS and MQTT listeners share; refusals
// are counted in metrics and logged at most every 10 seconds (a flood must
// not become a flood of log lines).
func (c LimitsConfig) connLimiter(metrics *prom.Metrics, log *slog.Logger) *connlimit.Limiter {
	var last atomic.Int64
	var lim *connlimit.Limiter
	lim = connlimit.New(connlimit.Options{Max: c.MaxConnections, PerSource: c.MaxConnectionsPerSource,
		Refused: func(listener, reason string) {
			metrics.ConnectionRefused(listener, reason)
			now, prev := time.Now().UnixNano(), last.Load()
			if prev != 0 && now-prev < int64(10*time.Second) || !last.CompareAndSwap(prev, now) {
				return
			}
			st := lim.Stats()
			log.Warn("connections refused by a connection limit", "listener", listener, "limit", reason,
				"max_connections", c.MaxConnections, "max_connections_per_source", c.MaxConnectionsPerSource,
				"open", st.Open, "refused_total", st.RefusedTotal+st.RefusedSource)
		}})
	return lim
}

// limitListener wraps a device listener (name: https, mqtt) in the
// connection limits.
func (s *server) limitListener(ln net.Listener, name string) net.Listener {
	if s.connLimits == nil {
		return ln
	}
	return s.connLimits.Wrap(ln, name)
}
