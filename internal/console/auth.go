package console

import (
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/sas"
)

// dpsRights are the rights of the DPS service API's policies a sign-in
// looks for.
func dpsRights() []access.Right {
	return []access.Right{access.ServiceConfig, access.EnrollmentRead, access.EnrollmentWrite, access.RegistrationStatusRead, access.RegistrationStatusWrite}
}

// credential is what the sign-in form gave: a policy name and its key, and
// the host name of a connection string ("" when none was given).
type credential struct {
	host, policy string
	key          []byte
}

// parseCredential reads the sign-in form: a connection string
// (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…) or a policy name
// and key. It reports false for anything it cannot use, without saying
// what (the caller answers every failure alike).
func parseCredential(connectionString, policy, key string) (credential, bool) {
	var c credential
	if cs := strings.TrimSpace(connectionString); cs != "" {
		for part := range strings.SplitSeq(cs, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok {
				continue
			}
			switch strings.ToLower(k) {
			case "hostname":
				c.host = v
			case "sharedaccesskeyname":
				c.policy = v
			case "sharedaccesskey":
				key = v
			}
		}
	} else {
		c.policy = strings.TrimSpace(policy)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(key))
	if err != nil || len(raw) == 0 || c.policy == "" {
		return credential{}, false
	}
	c.key = raw
	return c, true
}

// verify checks a credential the way the service APIs check a request:
// it signs a short-lived SAS token with the key and asks each service's
// authorizer (the DPS service's, then each built-in hub's) which rights
// the token carries. A service that refuses the token as unauthorized
// gives nothing; one that answers forbidden for a right knows the policy
// but not that right.
func (h *Handler) verify(c credential) []grant {
	now := h.o.Now()
	var out []grant
	try := func(service, host string, a Authorizer, rights []access.Right) {
		if a == nil {
			return
		}
		if c.host != "" {
			host = c.host // the authorizer decides whether it names the service
		}
		tok := sas.New(host, c.key, c.policy, now.Add(time.Minute))
		g := grant{Service: service, Policy: c.policy}
		known := false
		for _, r := range rights {
			switch err := a.Check(tok, "/", r); {
			case err == nil:
				known = true
				g.Rights = append(g.Rights, r)
			case dps.KindOf(err) == dps.KindForbidden:
				known = true
			}
		}
		if known {
			out = append(out, g)
		}
	}
	try("", h.o.ServiceHost, h.o.Service, dpsRights())
	for _, hub := range h.builtInHubs() {
		try(hub, hub, h.o.HubAuth[strings.ToLower(hub)], access.HubRights())
	}
	return out
}

// limiter throttles sign-in attempts per source address: a bucket of
// burst attempts per address, refilled at one attempt per every.
type limiter struct {
	mu      sync.Mutex
	burst   float64
	every   time.Duration
	max     int
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(burst int, every time.Duration, max int) *limiter {
	return &limiter{burst: float64(burst), every: every, max: max, buckets: map[string]*bucket{}}
}

// allow takes an attempt from source's bucket. When it is empty it
// reports false and how long until the next attempt is allowed.
func (l *limiter) allow(source string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[source]
	if !ok {
		if len(l.buckets) >= l.max {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[source] = b
	}
	b.tokens = min(l.burst, b.tokens+float64(now.Sub(b.at))/float64(l.every))
	b.at = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) * float64(l.every))
	}
	b.tokens--
	return true, 0
}

// prune forgets the sources whose bucket has refilled, and if that is not
// enough, any of them: a source forgotten gets a full bucket again.
func (l *limiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+float64(now.Sub(b.at))/float64(l.every) >= l.burst {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < l.max {
			break
		}
		delete(l.buckets, k)
	}
}

// source is the address a request came from (its host part; no
// forwarding header is trusted).
func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// sameOrigin checks a state-changing request's Origin header, or without
// one its Referer: when present, it must name this console's origin
// (https and the request's Host). A request carrying neither still needs
// the anti-forgery token.
func sameOrigin(r *http.Request) bool {
	want := "https://" + r.Host
	if o := r.Header.Get("Origin"); o != "" {
		return strings.EqualFold(o, want)
	}
	if ref := r.Header.Get("Referer"); ref != "" {
		u, err := url.Parse(ref)
		return err == nil && strings.EqualFold(u.Scheme, "https") && strings.EqualFold(u.Host, r.Host)
	}
	return true
}

// safeNext returns a sign-in's next page when it is a page of the console,
// else the overview.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(u.Path, "/console/") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		return "/console/"
	}
	return u.RequestURI()
}
