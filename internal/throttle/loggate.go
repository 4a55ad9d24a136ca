package throttle

import (
	"sync"
	"time"
)

// LogInterval is how often a LogGate lets one key's refusals be logged.
const LogInterval = 10 * time.Second

// DefaultLogKeys is how many keys a Limiter's and a ServiceLimiter's
// LogGate track.
const DefaultLogKeys = 1000

// LogGate keeps the log of throttled requests readable during a storm: per
// key (a registration ID and operation, a service quota and hub) the first
// refusal is logged, then at most one every interval, each line carrying
// the count of the key's refusals not logged since its previous line. At
// most maxKeys keys are tracked; a key not tracked shares one allowance
// with every other key not tracked, so a storm of distinct keys adds at
// most one line per interval. A tracked key whose last line is an interval
// old is forgotten when room is needed, its count of refusals not logged
// moving to the shared allowance's, so no refusal goes uncounted. It is
// safe for concurrent use.
type LogGate struct {
	interval time.Duration
	max      int
	now      func() time.Time
	mu       sync.Mutex
	keys     map[string]*logEntry
	other    logEntry  // the keys not tracked
	pruned   time.Time // the last time room was made
}

type logEntry struct {
	last       time.Time // the last line logged; zero: none yet
	suppressed int64     // refusals not logged since
}

// NewLogGate returns a LogGate (now: default time.Now).
func NewLogGate(interval time.Duration, maxKeys int, now func() time.Time) *LogGate {
	if now == nil {
		now = time.Now
	}
	return &LogGate{interval: interval, max: max(1, maxKeys), now: now, keys: map[string]*logEntry{}}
}

// Allow records a refusal of key and reports whether to log it; suppressed
// is then how many refusals of key (or, for a key not tracked, of every
// key not tracked) were not logged since its previous line.
func (g *LogGate) Allow(key string) (suppressed int64, ok bool) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.keys[key]
	if e == nil {
		if len(g.keys) >= g.max {
			g.prune(now)
		}
		if len(g.keys) < g.max {
			e = &logEntry{}
			g.keys[key] = e
		} else {
			e = &g.other
		}
	}
	if !e.last.IsZero() && now.Sub(e.last) < g.interval {
		e.suppressed++
		return 0, false
	}
	suppressed, e.suppressed, e.last = e.suppressed, 0, now
	return suppressed, true
}

// prune forgets the keys whose last line is an interval old, at most once
// an interval (a full map of recent keys is not scanned again and again).
func (g *LogGate) prune(now time.Time) {
	if !g.pruned.IsZero() && now.Sub(g.pruned) < g.interval {
		return
	}
	g.pruned = now
	for k, e := range g.keys {
		if now.Sub(e.last) >= g.interval {
			g.other.suppressed += e.suppressed
			delete(g.keys, k)
		}
	}
}

// Tracked returns how many keys the gate holds (tests).
func (g *LogGate) Tracked() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.keys)
}
