// Package throttle is Azure DPS's back-pressure: per registration ID limits
// on register and on operation-status (poll) requests, kept separately, and
// a per-instance limit on registrations (Limiter); limits on the DPS
// service API and on the built-in hubs' service API, modelled on Azure's
// quotas (ServiceLimiter, service.go); and a LogGate that keeps the log of
// refusals to one line per key per interval, every refusal counted in some
// line (loggate.go; Close reports what it still holds). Limits are token
// buckets: a limit of N per window admits a burst of N and then one
// request every window/N.
// The time source is injected (Options.Now), so tests run in a synctest
// bubble or with a fake clock.
//
// Memory is bounded: at most Options.MaxTracked registration IDs are kept
// per operation. When a new ID would exceed that, the least recently seen
// ID is forgotten — as if its allowance were full again. An ID that has not
// been seen for a whole window has a full allowance anyway, so forgetting
// it costs nothing; only a flood of more than MaxTracked distinct IDs
// within one window makes the per-ID limits approximate (an ID may then be
// admitted more often), never stricter. Each tracked ID costs about 150
// bytes.
//
// Limits are per process: on several nodes each node enforces the limit
// on the requests it serves, so N nodes admit up to N times a limit.
package throttle

import (
	"container/list"
	"math"
	"strings"
	"sync"
	"time"
)

// Op is what a request does.
type Op uint8

const (
	Register Op = iota // PUT …/register, $dps/registrations/PUT/iotdps-register
	Poll               // GET …/operations/{id}, iotdps-get-operationstatus
	Twin               // a built-in hub's twin GET or reported PATCH over MQTT (Options.TwinPer10s)
)

func (o Op) String() string {
	switch o {
	case Register:
		return "register"
	case Twin:
		return "twin"
	}
	return "poll"
}

// Message is Azure's message of a throttled request (error code 429001).
const Message = "Operations are being throttled for this tenant."

// DefaultMaxTracked is Options.MaxTracked's default.
const DefaultMaxTracked = 100_000

// Options configure a Limiter. A zero limit is no limit.
type Options struct {
	RegistersPer10s        int // per registration ID
	PollsPer10s            int // per registration ID
	TwinPer10s             int // per hub device: twin GET and reported PATCH over MQTT
	RegistrationsPerMinute int // per instance (this process)
	// MaxTracked bounds the registration IDs kept per operation (default
	// DefaultMaxTracked; see the package documentation).
	MaxTracked int
	Now        func() time.Time
	// Throttled, when set, is called for every refused request (metrics).
	Throttled func(transport string, op Op)
	// Unlogged, when set, is given the count of refusals LogThrottled kept
	// from the log once their interval ended without a line that carried
	// them, and at Close (LogGate), for a line of their own.
	Unlogged func(Summary[DeviceKey])
}

// DeviceKey is what a Limiter's log lines are gated by: an operation and
// a registration ID (lower-cased).
type DeviceKey struct {
	Op             Op
	RegistrationID string
}

// Limiter decides whether a request may proceed. A nil *Limiter admits
// everything. It is safe for concurrent use.
type Limiter struct {
	o        Options
	mu       sync.Mutex
	register *keyed // nil: no per-ID register limit
	poll     *keyed
	twin     *keyed
	instance *bucket // nil: no instance limit
	instRate rate
	logs     *LogGate[DeviceKey]
}

// New returns a Limiter, or nil when o sets no limit.
func New(o Options) *Limiter {
	if o.RegistersPer10s <= 0 && o.PollsPer10s <= 0 && o.TwinPer10s <= 0 && o.RegistrationsPerMinute <= 0 {
		return nil
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxTracked <= 0 {
		o.MaxTracked = DefaultMaxTracked
	}
	l := &Limiter{o: o, logs: NewLogGate(LogInterval, DefaultLogKeys, o.Now, o.Unlogged)}
	if o.RegistersPer10s > 0 {
		l.register = newKeyed(rate{o.RegistersPer10s, 10 * time.Second}, o.MaxTracked)
	}
	if o.PollsPer10s > 0 {
		l.poll = newKeyed(rate{o.PollsPer10s, 10 * time.Second}, o.MaxTracked)
	}
	if o.TwinPer10s > 0 {
		l.twin = newKeyed(rate{o.TwinPer10s, 10 * time.Second}, o.MaxTracked)
	}
	if o.RegistrationsPerMinute > 0 {
		l.instRate = rate{o.RegistrationsPerMinute, time.Minute}
		l.instance = &bucket{tokens: float64(o.RegistrationsPerMinute), at: o.Now()}
	}
	return l
}

// Allow reports whether a request of regID may proceed. When it may not,
// retryAfter is how long until it would (at least one second). transport
// is only passed on to Options.Throttled. The instance limit applies to
// registers only; a register refused by one limit consumes nothing of the
// other.
func (l *Limiter) Allow(transport string, op Op, regID string) (retryAfter time.Duration, ok bool) {
	if l == nil {
		return 0, true
	}
	now := l.o.Now()
	key := strings.ToLower(regID)
	l.mu.Lock()
	var dev *bucket
	var devRate rate
	switch k := l.keyedFor(op); {
	case k != nil:
		dev, devRate = k.get(key, now), k.rate
		dev.refill(devRate, now)
	}
	var inst *bucket
	if op == Register && l.instance != nil {
		inst = l.instance
		inst.refill(l.instRate, now)
	}
	var wait time.Duration
	if dev != nil && dev.tokens < 1 {
		wait = dev.wait(devRate)
	}
	if inst != nil && inst.tokens < 1 {
		wait = max(wait, inst.wait(l.instRate))
	}
	if wait == 0 {
		if dev != nil {
			dev.tokens--
		}
		if inst != nil {
			inst.tokens--
		}
	}
	l.mu.Unlock()
	if wait == 0 {
		return 0, true
	}
	if l.o.Throttled != nil {
		l.o.Throttled(transport, op)
	}
	return wait, false
}

// LogThrottled reports whether to log a refusal of regID's op: the first,
// then at most one a LogInterval per registration ID and operation
// (LogGate); suppressed is then the number of refusals not logged since
// the previous line.
func (l *Limiter) LogThrottled(op Op, regID string) (suppressed int64, ok bool) {
	if l == nil {
		return 0, true
	}
	return l.logs.Allow(DeviceKey{op, strings.ToLower(regID)})
}

// Close reports the counts of refusals LogThrottled still holds
// (Options.Unlogged) and stops its timer. A nil *Limiter's does nothing.
func (l *Limiter) Close() {
	if l != nil {
		l.logs.Close()
	}
}

// Tracked returns how many registration IDs the limiter holds for op (tests,
// to check that memory stays bounded).
func (l *Limiter) Tracked(op Op) int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if k := l.keyedFor(op); k != nil {
		return len(k.m)
	}
	return 0
}

func (l *Limiter) keyedFor(op Op) *keyed {
	switch op {
	case Register:
		return l.register
	case Twin:
		return l.twin
	}
	return l.poll
}

// rate is n requests per window.
type rate struct {
	n      int
	window time.Duration
}

func (r rate) perSecond() float64 { return float64(r.n) / r.window.Seconds() }

// bucket is a token bucket: tokens as of at.
type bucket struct {
	tokens float64
	at     time.Time
	key    string
}

func (b *bucket) refill(r rate, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = math.Min(float64(r.n), b.tokens+d.Seconds()*r.perSecond())
		b.at = now
	}
}

// wait is how long until the bucket holds a token, in whole seconds (the
// Retry-After unit), at least one.
func (b *bucket) wait(r rate) time.Duration {
	s := math.Ceil((1 - b.tokens) / r.perSecond())
	return time.Duration(max(s, 1)) * time.Second
}

// keyed holds one bucket per key, least recently used first out.
type keyed struct {
	rate rate
	max  int
	m    map[string]*list.Element // of *bucket
	lru  list.List                // front: most recently used
}

func newKeyed(r rate, maxKeys int) *keyed {
	return &keyed{rate: r, max: maxKeys, m: map[string]*list.Element{}}
}

// get returns key's bucket, making a full one for a key not held (and
// forgetting the least recently used key when max are held).
func (k *keyed) get(key string, now time.Time) *bucket {
	if e, ok := k.m[key]; ok {
		k.lru.MoveToFront(e)
		return e.Value.(*bucket)
	}
	if len(k.m) >= k.max {
		old := k.lru.Back()
		k.lru.Remove(old)
		delete(k.m, old.Value.(*bucket).key)
	}
	b := &bucket{tokens: float64(k.rate.n), at: now, key: key}
	k.m[key] = k.lru.PushFront(b)
	return b
}
