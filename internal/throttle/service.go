package throttle

import (
	"strings"
	"sync"
	"time"
)

// The service APIs' limits: token buckets per node, modelled on the quotas
// Azure documents — DPS's "operations" (1,000 per minute per unit) for the
// DPS service API, and IoT Hub's operation throttles (S1, per unit) for each
// built-in hub's service API, one set of buckets per hub, as every IoT hub
// has its own quota. A request refused here consumes nothing.

// The service APIs a throttled request can be for (the api label of
// dps_service_throttled_requests_total; device requests are counted apart,
// in dps_throttled_requests_total).
const (
	APIService    = "service"    // the DPS service API
	APIHubService = "hubService" // a built-in hub's service API
)

// Quota is one service API limit.
type Quota uint8

const (
	// ServiceOperations: every DPS service API request (enrollments,
	// groups, registrations, CA certificates, their queries and bulk
	// operations). Azure: 1,000 operations per minute per unit.
	ServiceOperations Quota = iota
	// HubRegistry: a built-in hub's identity registry (create, get,
	// update, delete, list, bulk, device statistics). Azure S1: 100 per
	// minute per unit (S3: 5,000).
	HubRegistry
	// HubTwinRead: GET /twins/{id}. Azure S1: 100 per second.
	HubTwinRead
	// HubTwinUpdate: PATCH and PUT /twins/{id}. Azure S1: 50 per second.
	HubTwinUpdate
	// HubQuery: POST /devices/query (each page). Azure S1: 20 per minute
	// per unit.
	HubQuery
	// HubMethod: POST /twins/{id}/methods. Azure meters 160 KB/s per unit
	// in 4 KB units; counted here per call.
	HubMethod
	// HubC2DSend: POST /devices/{id}/messages/deviceBound. Azure S1: 100
	// per minute per unit.
	HubC2DSend
	numQuotas
)

var quotaNames = [numQuotas]string{"operations", "registry", "twinRead", "twinUpdate", "query", "method", "c2dSend"}

// String is the quota's name (the metric's quota label).
func (q Quota) String() string {
	if q < numQuotas {
		return quotaNames[q]
	}
	return "unknown"
}

// API is the API the quota limits (APIService or APIHubService).
func (q Quota) API() string {
	if q == ServiceOperations {
		return APIService
	}
	return APIHubService
}

// ServiceOptions configure a ServiceLimiter. A zero limit is no limit.
type ServiceOptions struct {
	OperationsPerMinute int // DPS service API, the whole node

	// Per built-in hub:
	RegistryOperationsPerMinute int
	TwinReadsPerSecond          int
	TwinUpdatesPerSecond        int
	QueriesPerMinute            int
	MethodsPerSecond            int
	C2DSendsPerMinute           int

	Now func() time.Time
	// Throttled, when set, is called for every refused request (metrics).
	Throttled func(q Quota)
	// Unlogged, when set, is given the count of refusals LogThrottled kept
	// from the log once their interval ended without a line that carried
	// them, and at Close (LogGate), for a line of their own.
	Unlogged func(Summary[ServiceKey])
}

// ServiceKey is what a ServiceLimiter's log lines are gated by: a quota
// and a built-in hub's name (lower-cased; "" for the DPS service API).
type ServiceKey struct {
	Quota Quota
	Hub   string
}

// maxScopes bounds the hubs a ServiceLimiter keeps buckets for (the
// configured built-in hubs are far fewer).
const maxScopes = 1024

// ServiceLimiter decides whether a service API request may proceed. A nil
// *ServiceLimiter admits everything. It is safe for concurrent use.
type ServiceLimiter struct {
	o     ServiceOptions
	mu    sync.Mutex
	quota [numQuotas]*keyed // nil: no limit; keyed by scope
	logs  *LogGate[ServiceKey]
}

// NewService returns a ServiceLimiter, or nil when o sets no limit.
func NewService(o ServiceOptions) *ServiceLimiter {
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &ServiceLimiter{o: o, logs: NewLogGate(LogInterval, DefaultLogKeys, o.Now, o.Unlogged)}
	limited := false
	for q, r := range map[Quota]rate{
		ServiceOperations: {o.OperationsPerMinute, time.Minute},
		HubRegistry:       {o.RegistryOperationsPerMinute, time.Minute},
		HubTwinRead:       {o.TwinReadsPerSecond, time.Second},
		HubTwinUpdate:     {o.TwinUpdatesPerSecond, time.Second},
		HubQuery:          {o.QueriesPerMinute, time.Minute},
		HubMethod:         {o.MethodsPerSecond, time.Second},
		HubC2DSend:        {o.C2DSendsPerMinute, time.Minute},
	} {
		if r.n > 0 {
			l.quota[q] = newKeyed(r, maxScopes)
			limited = true
		}
	}
	if !limited {
		return nil
	}
	return l
}

// Allow reports whether a request under quota q may proceed; scope is the
// built-in hub's name for a hub quota ("" for the DPS service API). When
// it may not, retryAfter is how long until it would (at least a second).
func (l *ServiceLimiter) Allow(q Quota, scope string) (retryAfter time.Duration, ok bool) {
	if l == nil || q >= numQuotas || l.quota[q] == nil {
		return 0, true
	}
	k := l.quota[q]
	now := l.o.Now()
	l.mu.Lock()
	b := k.get(strings.ToLower(scope), now)
	b.refill(k.rate, now)
	if b.tokens >= 1 {
		b.tokens--
		l.mu.Unlock()
		return 0, true
	}
	wait := b.wait(k.rate)
	l.mu.Unlock()
	if l.o.Throttled != nil {
		l.o.Throttled(q)
	}
	return wait, false
}

// LogThrottled reports whether to log a refusal of quota q in scope: the
// first, then at most one a LogInterval (LogGate); suppressed is then the
// number of refusals not logged since the previous line.
func (l *ServiceLimiter) LogThrottled(q Quota, scope string) (suppressed int64, ok bool) {
	if l == nil {
		return 0, true
	}
	return l.logs.Allow(ServiceKey{q, strings.ToLower(scope)})
}

// Close reports the counts of refusals LogThrottled still holds
// (ServiceOptions.Unlogged) and stops its timer. A nil *ServiceLimiter's
// does nothing.
func (l *ServiceLimiter) Close() {
	if l != nil {
		l.logs.Close()
	}
}
