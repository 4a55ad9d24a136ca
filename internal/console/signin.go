package console

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// setCookie sets one of the console's cookies: HttpOnly, Secure,
// SameSite=Strict, Path=/console. maxAge 0 is a browser-session cookie,
// negative deletes it.
func setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/console", MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// signInData is the sign-in page's.
type signInData struct {
	Next string
	Hub  string // the hub whose page asked for a credential, if any
	// Token is the anti-forgery token of the form (the sign-in cookie's,
	// or the session's when signed in).
	Token string
}

// signInForm shows the sign-in form. Its anti-forgery token is the
// sign-in cookie's, set here.
func (h *Handler) signInForm(w http.ResponseWriter, r *http.Request) {
	s, _ := h.current(r)
	tok := ""
	if s != nil {
		tok = s.csrf
	} else {
		tok = randomToken()
		setCookie(w, signInCookie, tok, 3600)
	}
	h.render(w, r, s, http.StatusOK, "signin", page{Title: "Sign in", Data: signInData{Next: safeNext(r.URL.Query().Get("next")), Token: tok}})
}

// signInFailed is what every failed sign-in says: never which of the
// name, the key or the host was wrong.
const signInFailed = "Sign-in failed: the access policy name and key (or the connection string) are not valid here."

// signIn checks a credential and starts a session holding what it grants
// (adding to the current session's credentials: a hub's policy next to
// the DPS one). The session gets a new ID at every sign-in.
func (h *Handler) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	cur, signedIn := h.current(r)
	form := r.PostFormValue("csrf")
	tokenOK := signedIn && tokenEqual(form, cur.csrf)
	if c, err := r.Cookie(signInCookie); !tokenOK && err == nil {
		tokenOK = tokenEqual(form, c.Value)
	}
	data := signInData{Next: safeNext(r.PostFormValue("next")), Hub: r.PostFormValue("hub")}
	again := func(status int, msg string) {
		if signedIn {
			data.Token = cur.csrf
		} else {
			data.Token = randomToken()
			setCookie(w, signInCookie, data.Token, 3600)
		}
		h.render(w, r, cur, status, "signin", page{Title: "Sign in", Error: msg, Data: data})
	}
	if !sameOrigin(r) || !tokenOK {
		h.o.Logger.Info("console: sign-in refused: anti-forgery check failed", "source", source(r))
		again(http.StatusForbidden, "The sign-in form was not sent from this console, or it is out of date. Try again.")
		return
	}
	if ok, wait := h.signIns.allow(source(r), h.o.Now()); !ok {
		secs := int(wait.Seconds()) + 1
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		h.o.Logger.Info("console: sign-in throttled", "source", source(r))
		again(http.StatusTooManyRequests, "Too many sign-in attempts from your address. Wait "+strconv.Itoa(secs)+" s and try again.")
		return
	}
	c, ok := parseCredential(r.PostFormValue("connectionString"), r.PostFormValue("policy"), r.PostFormValue("key"))
	var grants []grant
	if ok {
		grants = h.verify(c)
	}
	if len(grants) == 0 {
		h.o.Logger.Info("console: sign-in failed", "source", source(r))
		again(http.StatusUnauthorized, signInFailed)
		return
	}
	for _, g := range grants {
		what := "dps"
		if g.Service != "" {
			what = "hub " + g.Service
		}
		h.o.Logger.Info("console: signed in", "policy", g.Policy, "service", what, "source", source(r))
	}
	if signedIn {
		for _, old := range cur.grants {
			kept := true
			for _, g := range grants {
				if strings.EqualFold(g.Service, old.Service) {
					kept = false
				}
			}
			if kept {
				grants = append(grants, old)
			}
		}
		h.sessions.end(cur.id)
	}
	sortGrants(grants)
	s := h.sessions.create(grants, h.o.Now())
	setCookie(w, sessionCookie, s.id, 0)
	setCookie(w, signInCookie, "", -1)
	http.Redirect(w, r, data.Next, http.StatusSeeOther)
}

// sortGrants puts the DPS service's grant first, then the hubs' by name.
func sortGrants(gs []grant) {
	slices.SortFunc(gs, func(a, b grant) int {
		if (a.Service == "") != (b.Service == "") {
			if a.Service == "" {
				return -1
			}
			return 1
		}
		return strings.Compare(strings.ToLower(a.Service), strings.ToLower(b.Service))
	})
}

// signOut ends the session.
func (h *Handler) signOut(w http.ResponseWriter, r *http.Request, s *session) {
	h.sessions.end(s.id)
	setCookie(w, sessionCookie, "", -1)
	http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
}
