package throttle

import (
	"container/list"
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
// refusal is logged, then at most one line every interval, each line
// carrying the count of the key's refusals not logged since its previous
// line.
//
// No refusal goes uncounted. When a key's interval ends with refusals not
// logged and no new refusal has logged them, the gate hands their count to
// its unlogged function (a Summary, for a line of its own, which counts as
// the key's line of the next interval): on the next Allow of any key, or
// at the latest an interval/10 later from a timer (time.AfterFunc, armed
// only while some key is within its interval: no goroutine waits while
// the gate is idle). Close reports every count still held and stops the
// timer.
//
// At most maxKeys keys are tracked at once; a key whose interval ended
// with nothing left to report is forgotten. A key not tracked shares one
// allowance with every other key not tracked, so a storm of distinct keys
// adds at most one line per interval (its Summary is Untracked). It is
// safe for concurrent use.
type LogGate[K comparable] struct {
	interval time.Duration
	max      int
	now      func() time.Time
	unlogged func(Summary[K])

	mu     sync.Mutex
	keys   map[K]*logEntry[K]
	other  logEntry[K] // the keys not tracked
	queue  list.List   // of *logEntry[K] within their interval, oldest line first
	timer  *time.Timer // nil until first armed
	armed  bool
	closed bool
}

// Summary is the count of a key's refusals that were not logged, reported
// once its interval ended without a line that carried them.
type Summary[K comparable] struct {
	Key        K    // zero when Untracked
	Untracked  bool // the keys past the gate's cap, together
	Suppressed int64
}

type logEntry[K comparable] struct {
	key        K
	untracked  bool
	last       time.Time     // the last line (logged or summary)
	suppressed int64         // refusals not logged since
	elem       *list.Element // in the queue; nil: not within an interval
}

// NewLogGate returns a LogGate (now: default time.Now); unlogged, when
// set, is called, outside the gate's lock, with each Summary. An interval
// of zero or less logs every refusal.
func NewLogGate[K comparable](interval time.Duration, maxKeys int, now func() time.Time, unlogged func(Summary[K])) *LogGate[K] {
	if now == nil {
		now = time.Now
	}
	g := &LogGate[K]{interval: interval, max: max(1, maxKeys), now: now, unlogged: unlogged, keys: map[K]*logEntry[K]{}}
	g.other.untracked = true
	return g
}

// Allow records a refusal of key and reports whether to log it; suppressed
// is then how many refusals of key (or, for a key not tracked, of every
// key not tracked) were not logged since its previous line. After Close
// every refusal is to be logged.
func (g *LogGate[K]) Allow(key K) (suppressed int64, ok bool) {
	if g == nil || g.interval <= 0 {
		return 0, true
	}
	now := g.now()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return 0, true
	}
	var due []Summary[K]
	e := g.keys[key]
	if e == nil && len(g.keys) >= g.max {
		due = g.expire(now, due) // forgets the keys whose interval ended
	}
	if e == nil {
		if len(g.keys) < g.max {
			e = &logEntry[K]{key: key}
			g.keys[key] = e
		} else {
			e = &g.other
		}
	}
	if e.elem != nil && now.Sub(e.last) < g.interval {
		e.suppressed++
	} else {
		suppressed, e.suppressed, ok = e.suppressed, 0, true
		g.touch(e, now)
	}
	due = g.expire(now, due) // the other keys whose interval ended
	g.mu.Unlock()
	g.report(due)
	return suppressed, ok
}

// touch makes now e's last line and moves it to the queue's back.
func (g *LogGate[K]) touch(e *logEntry[K], now time.Time) {
	e.last = now
	if e.elem == nil {
		e.elem = g.queue.PushBack(e)
	} else {
		g.queue.MoveToBack(e.elem)
	}
	g.arm(now)
}

// expire goes through the entries whose interval ended by now, oldest
// first: one with refusals not logged gets a Summary (appended to out),
// which is its line for the next interval; one without is forgotten.
func (g *LogGate[K]) expire(now time.Time, out []Summary[K]) []Summary[K] {
	for f := g.queue.Front(); f != nil; f = g.queue.Front() {
		e := f.Value.(*logEntry[K])
		if now.Sub(e.last) < g.interval {
			break
		}
		if e.suppressed > 0 {
			out = append(out, e.summary())
			e.suppressed = 0
			e.last = now
			g.queue.MoveToBack(f)
			continue
		}
		g.queue.Remove(f)
		e.elem = nil
		if !e.untracked {
			delete(g.keys, e.key)
		}
	}
	return out
}

func (e *logEntry[K]) summary() Summary[K] {
	s := Summary[K]{Untracked: e.untracked, Suppressed: e.suppressed}
	if !e.untracked {
		s.Key = e.key
	}
	return s
}

// arm starts the timer, unless it runs already, for an interval/10 after
// the end of the oldest entry's interval (a storm of distinct keys wakes
// it at most ten times an interval).
func (g *LogGate[K]) arm(now time.Time) {
	f := g.queue.Front()
	if g.armed || g.closed || f == nil || g.unlogged == nil {
		return
	}
	d := max(time.Millisecond, f.Value.(*logEntry[K]).last.Add(g.interval+g.interval/10).Sub(now))
	if g.timer == nil {
		g.timer = time.AfterFunc(d, g.fire)
	} else {
		g.timer.Reset(d)
	}
	g.armed = true
}

// fire is the timer's: the Summaries of the entries whose interval ended.
func (g *LogGate[K]) fire() {
	now := g.now()
	g.mu.Lock()
	g.armed = false
	if g.closed {
		g.mu.Unlock()
		return
	}
	due := g.expire(now, nil)
	g.arm(now)
	g.mu.Unlock()
	g.report(due)
}

func (g *LogGate[K]) report(due []Summary[K]) {
	if g.unlogged == nil {
		return
	}
	for _, s := range due {
		g.unlogged(s)
	}
}

// Close stops the timer and reports the count of every key still held
// (their interval not ended yet). It is idempotent; after it, Allow lets
// every refusal be logged.
func (g *LogGate[K]) Close() {
	if g == nil {
		return
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	if g.timer != nil {
		g.timer.Stop()
	}
	var due []Summary[K]
	for f := g.queue.Front(); f != nil; f = f.Next() {
		if e := f.Value.(*logEntry[K]); e.suppressed > 0 {
			due = append(due, e.summary())
			e.suppressed = 0
		}
	}
	g.queue.Init()
	clear(g.keys)
	g.other = logEntry[K]{untracked: true}
	g.mu.Unlock()
	g.report(due)
}

// Tracked returns how many keys the gate holds (tests).
func (g *LogGate[K]) Tracked() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.keys)
}
