package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps/internal/access"
)

// Cookie names. Both are HttpOnly, Secure, SameSite=Strict and scoped to
// Path=/console.
const (
	sessionCookie = "dps_console"
	// signInCookie holds the sign-in form's anti-forgery token before a
	// session exists (a double-submit token: a cross-site page can
	// neither read the cookie nor set it).
	signInCookie = "dps_console_signin"
)

// grant is what one verified credential gives a session: a policy of the
// DPS service (Service "") or of a built-in hub (Service its host name),
// and the rights that policy holds.
type grant struct {
	Service string
	Policy  string
	Rights  []access.Right
}

// session is one signed-in browser. It never holds a key: the
// credentials are checked at sign-in and only the policy names and their
// rights are kept.
type session struct {
	id      string
	csrf    string
	created time.Time
	seen    time.Time
	grants  []grant
	// flashMsg is the message the next page shows (under sessions.mu).
	flashMsg string
}

// has reports whether the session's credential for service holds right.
func (s *session) has(service string, right access.Right) bool {
	for _, g := range s.grants {
		if strings.EqualFold(g.Service, service) && slices.Contains(g.Rights, right) {
			return true
		}
	}
	return false
}

// grantFor returns the session's grant for service.
func (s *session) grantFor(service string) (grant, bool) {
	for _, g := range s.grants {
		if strings.EqualFold(g.Service, service) {
			return g, true
		}
	}
	return grant{}, false
}

// policy is the name of the session's policy of service ("" for none).
func (s *session) policy(service string) string {
	g, _ := s.grantFor(service)
	return g.Policy
}

// sessions holds the signed-in sessions in memory: a session ends after
// idle without a request, at maxAge after sign-in, at sign-out, or when
// max newer sessions pushed it out. A restart of dpsd signs everyone out.
type sessions struct {
	mu     sync.Mutex
	byID   map[string]*session
	idle   time.Duration
	maxAge time.Duration
	max    int
}

func newSessions(idle, maxAge time.Duration, max int) *sessions {
	return &sessions{byID: map[string]*session{}, idle: idle, maxAge: maxAge, max: max}
}

// randomToken returns 32 random bytes, base64url.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (ss *sessions) expired(s *session, now time.Time) bool {
	return now.Sub(s.seen) >= ss.idle || now.Sub(s.created) >= ss.maxAge
}

// create starts a session with grants. The oldest sessions make room
// when there are max of them (the expired ones first).
func (ss *sessions) create(grants []grant, now time.Time) *session {
	s := &session{id: randomToken(), csrf: randomToken(), created: now, seen: now, grants: grants}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.byID) >= ss.max {
		for id, old := range ss.byID {
			if ss.expired(old, now) {
				delete(ss.byID, id)
			}
		}
	}
	for len(ss.byID) >= ss.max {
		var oldest *session
		for _, old := range ss.byID {
			if oldest == nil || old.seen.Before(oldest.seen) {
				oldest = old
			}
		}
		delete(ss.byID, oldest.id)
	}
	ss.byID[s.id] = s
	return s
}

// get returns the live session with id and marks it seen; an expired one
// is removed.
func (ss *sessions) get(id string, now time.Time) (*session, bool) {
	if id == "" {
		return nil, false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.byID[id]
	if !ok {
		return nil, false
	}
	if ss.expired(s, now) {
		delete(ss.byID, id)
		return nil, false
	}
	s.seen = now
	return s, true
}

// alive reports whether the session with id is live, without marking it
// seen (a live stream's check is no request of the user).
func (ss *sessions) alive(id string, now time.Time) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.byID[id]
	return ok && !ss.expired(s, now)
}

// end removes a session.
func (ss *sessions) end(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.byID, id)
}

// count is how many sessions are held (expired ones not yet removed
// included).
func (ss *sessions) count() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.byID)
}

// tokenEqual compares two anti-forgery tokens in constant time; an empty
// token never matches.
func tokenEqual(a, b string) bool {
	return a != "" && b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
