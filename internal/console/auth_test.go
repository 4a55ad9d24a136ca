package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestSignIn(t *testing.T) {
	e := newEnv(t, envOptions{signInBurst: 50})
	t.Run("ok/connection-string", func(t *testing.T) {
		b := e.browser()
		a := b.signIn(url.Values{"connectionString": {e.owner}, "next": {"/console/groups"}})
		if a.status != http.StatusSeeOther || a.location != "/console/groups" {
			t.Fatalf("sign-in = %d → %q, want 303 → /console/groups", a.status, a.location)
		}
		a = b.get("/console/")
		mustContain(t, a.body, "Overview", `owner`, "Sign out", "CA certificates")
	})
	t.Run("ok/name-and-key", func(t *testing.T) {
		b := e.browser()
		if a := b.signIn(url.Values{"policy": {"reader"}, "key": {e.readerKey}}); a.status != http.StatusSeeOther || a.location != "/console/" {
			t.Fatalf("sign-in = %d → %q", a.status, a.location)
		}
		mustContain(t, b.get("/console/").body, "reader")
	})
	t.Run("ok/next-off-site-is-ignored", func(t *testing.T) {
		b := e.browser()
		for _, next := range []string{"https://evil.example/", "//evil.example/console/", "/elsewhere"} {
			b.get("/console/signin")
			if a := b.post("/console/signin", url.Values{"connectionString": {e.owner}, "next": {next}}); a.location != "/console/" {
				t.Errorf("next %q: redirected to %q", next, a.location)
			}
		}
	})
	// A failure says the same whatever was wrong.
	var first string
	for name, form := range map[string]url.Values{
		"wrong-key":        {"policy": {"owner"}, "key": {newKey()}},
		"unknown-policy":   {"policy": {"nobody"}, "key": {e.ownerKey}},
		"other-policy-key": {"policy": {"reader"}, "key": {e.ownerKey}},
		"key-not-base64":   {"policy": {"owner"}, "key": {"not base64!"}},
		"wrong-host":       {"connectionString": {strings.Replace(e.owner, serviceHost, "other.example", 1)}},
		"empty":            {},
	} {
		t.Run("fail/"+name, func(t *testing.T) {
			b := e.browser()
			a := b.signIn(form)
			if a.status != http.StatusUnauthorized {
				t.Fatalf("sign-in = %d, want 401", a.status)
			}
			msg := alertOf(a.body)
			if !strings.Contains(msg, "Sign-in failed") {
				t.Fatalf("alert %q", msg)
			}
			if first == "" {
				first = msg
			} else if msg != first {
				t.Errorf("failure says %q; another said %q", msg, first)
			}
			if st := b.get("/console/").status; st != http.StatusSeeOther {
				t.Errorf("after a failed sign-in the overview answers %d, want 303 to sign in", st)
			}
		})
	}
	t.Run("fail/no-token", func(t *testing.T) {
		b := e.browser()
		b.get("/console/signin")
		if a := b.post("/console/signin", url.Values{"connectionString": {e.owner}, "csrf": {""}}); a.status != http.StatusForbidden {
			t.Fatalf("sign-in without its token = %d, want 403", a.status)
		}
	})
	t.Run("fail/cross-origin", func(t *testing.T) {
		b := e.browser()
		b.origin = "https://evil.example"
		if a := b.signIn(url.Values{"connectionString": {e.owner}}); a.status != http.StatusForbidden {
			t.Fatalf("cross-origin sign-in = %d, want 403", a.status)
		}
	})
}

// alertOf returns the page's alert text.
func alertOf(body string) string {
	i := strings.Index(body, `role="alert">`)
	if i < 0 {
		return ""
	}
	rest := body[i+len(`role="alert">`):]
	return rest[:strings.Index(rest, "<")]
}

func TestCookieFlags(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.browser()
	check := func(t *testing.T, h http.Header, name string) {
		t.Helper()
		for _, c := range h.Values("Set-Cookie") {
			if !strings.HasPrefix(c, name+"=") {
				continue
			}
			for _, want := range []string{"Path=/console", "HttpOnly", "Secure", "SameSite=Strict"} {
				if !strings.Contains(c, want) {
					t.Errorf("cookie %s lacks %s", c, want)
				}
			}
			return
		}
		t.Errorf("no %s cookie set: %v", name, h.Values("Set-Cookie"))
	}
	a := b.get("/console/signin")
	check(t, a.header, "dps_console_signin")
	a = b.post("/console/signin", url.Values{"connectionString": {e.owner}})
	check(t, a.header, "dps_console")
	a = b.get("/console/")
	for k, want := range map[string]string{"Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"} {
		if got := a.header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if csp := a.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
}

func TestSessionExpiry(t *testing.T) {
	e := newEnv(t, envOptions{})
	t.Run("idle", func(t *testing.T) {
		b := e.browser()
		b.mustSignIn(e.owner)
		e.clock.advance(29 * time.Minute)
		if st := b.get("/console/groups").status; st != http.StatusOK {
			t.Fatalf("after 29 min: %d", st)
		}
		e.clock.advance(29 * time.Minute) // the last request renewed it
		if st := b.get("/console/groups").status; st != http.StatusOK {
			t.Fatalf("29 min after the last request: %d", st)
		}
		e.clock.advance(30 * time.Minute)
		a := b.get("/console/groups")
		if a.status != http.StatusSeeOther || !strings.HasPrefix(a.location, "/console/signin?next=%2Fconsole%2Fgroups") {
			t.Fatalf("after 30 idle min: %d → %q, want 303 to sign in", a.status, a.location)
		}
	})
	t.Run("max-age", func(t *testing.T) {
		b := e.browser()
		b.mustSignIn(e.owner)
		for range 25 { // 12.5 h of requests every 30 min minus a second
			e.clock.advance(30*time.Minute - time.Second)
			if st := b.get("/console/").status; st != http.StatusOK {
				if st != http.StatusSeeOther {
					t.Fatalf("status %d", st)
				}
				return
			}
		}
		t.Fatal("a session lived past its 12 h maximum age")
	})
	t.Run("sign-out", func(t *testing.T) {
		b := e.browser()
		b.mustSignIn(e.owner)
		cookies := b.c.Jar.Cookies(mustURL(t, e.srv.URL+"/console/"))
		if a := b.post("/console/signout", nil); a.status != http.StatusSeeOther {
			t.Fatalf("sign-out = %d", a.status)
		}
		// The old cookie, replayed, no longer works.
		b2 := e.browser()
		b2.c.Jar.SetCookies(mustURL(t, e.srv.URL+"/console/"), cookies)
		if st := b2.get("/console/").status; st != http.StatusSeeOther {
			t.Fatalf("replayed cookie after sign-out: %d", st)
		}
	})
	t.Run("new-id-at-sign-in", func(t *testing.T) {
		b := e.browser()
		b.mustSignIn(e.reader)
		before := b.c.Jar.Cookies(mustURL(t, e.srv.URL+"/console/"))
		b.get("/console/signin")
		b.post("/console/signin", url.Values{"connectionString": {e.hubCS}})
		stale := e.browser()
		stale.c.Jar.SetCookies(mustURL(t, e.srv.URL+"/console/"), before)
		if st := stale.get("/console/").status; st != http.StatusSeeOther {
			t.Fatalf("the session ID before a second sign-in still works: %d", st)
		}
		// The new session holds both credentials.
		mustContain(t, b.get("/console/").body, "reader", "iothubowner")
	})
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestSessionsBounded(t *testing.T) {
	e := newEnv(t, envOptions{maxSessions: 2})
	b1, b2, b3 := e.browser(), e.browser(), e.browser()
	b1.mustSignIn(e.owner)
	e.clock.advance(time.Second)
	b2.mustSignIn(e.owner)
	e.clock.advance(time.Second)
	b1.get("/console/") // b1 is now more recent than b2
	e.clock.advance(time.Second)
	b3.mustSignIn(e.owner)
	if st := b2.get("/console/").status; st != http.StatusSeeOther {
		t.Errorf("least recently used session: %d, want 303 (ended)", st)
	}
	for i, b := range []*browser{b1, b3} {
		if st := b.get("/console/").status; st != http.StatusOK {
			t.Errorf("session %d: %d", i, st)
		}
	}
}

func TestSignInThrottled(t *testing.T) {
	e := newEnv(t, envOptions{signInBurst: 3})
	b := e.browser()
	for i := range 3 {
		if a := b.signIn(url.Values{"policy": {"owner"}, "key": {newKey()}}); a.status != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i, a.status)
		}
	}
	// The right key is refused too while the source is throttled.
	a := b.signIn(url.Values{"connectionString": {e.owner}})
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" {
		t.Fatalf("4th attempt = %d (Retry-After %q), want 429", a.status, a.header.Get("Retry-After"))
	}
	e.clock.advance(6 * time.Second)
	if a := b.signIn(url.Values{"connectionString": {e.owner}}); a.status != http.StatusSeeOther {
		t.Fatalf("after the refill: %d", a.status)
	}
}

func TestCSRF(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.browser()
	b.mustSignIn(e.owner)
	create := url.Values{"id": {"g-csrf"}, "attestation": {"symmetricKey"}, "enabled": {"on"}}
	exists := func() bool {
		_, err := e.mgr.Group(context.Background(), "g-csrf")
		return err == nil
	}
	for name, tc := range map[string]struct {
		token, origin, referer string
	}{
		"no-token":      {token: "", origin: e.srv.URL},
		"wrong-token":   {token: "forged", origin: e.srv.URL},
		"cross-origin":  {token: "right", origin: "https://evil.example"},
		"cross-referer": {token: "right", referer: "https://evil.example/page"},
		"http-origin":   {token: "right", origin: strings.Replace(e.srv.URL, "https://", "http://", 1)},
	} {
		t.Run("refused/"+name, func(t *testing.T) {
			b.get("/console/groups/new")
			form := url.Values{}
			for k, v := range create {
				form[k] = v
			}
			form.Set("csrf", tc.token)
			if tc.token == "right" {
				form.Set("csrf", csrfOf(b.last))
			}
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/console/groups", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			if tc.referer != "" {
				req.Header.Set("Referer", tc.referer)
			}
			if a := b.do(req); a.status != http.StatusForbidden {
				t.Fatalf("POST = %d, want 403", a.status)
			}
			if exists() {
				t.Fatal("the refused POST created the group")
			}
		})
	}
	t.Run("ok", func(t *testing.T) {
		b.get("/console/groups/new")
		if a := b.post("/console/groups", create); a.status != http.StatusSeeOther {
			t.Fatalf("POST = %d\n%s", a.status, a.body)
		}
		if !exists() {
			t.Fatal("group not created")
		}
	})
	t.Run("token-of-another-session", func(t *testing.T) {
		other := e.browser()
		other.mustSignIn(e.owner)
		b.get("/console/")
		form := url.Values{"csrf": {csrfOf(other.last)}}
		if a := b.post("/console/group/g-csrf/delete", form); a.status != http.StatusForbidden {
			t.Fatalf("POST with another session's token = %d, want 403", a.status)
		}
		if !exists() {
			t.Fatal("deleted with another session's token")
		}
	})
}
