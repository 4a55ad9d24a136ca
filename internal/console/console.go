// Package console is dps's web console: server-rendered pages under
// /console/ on the HTTPS listener for operators and firmware engineers —
// an overview, enrollments and groups, registrations, the live
// registration-events feed, the built-in hubs' devices (twins, direct
// methods, cloud-to-device messages, a live telemetry tail), CA
// certificates with their proof of possession, and fault injection rules.
//
// The console calls the use cases in-process through the small
// interfaces declared here, with the rights checks of the service APIs: a
// user signs in with a shared access policy (its name and key, or a
// connection string) of the DPS service or of a built-in hub, and the
// policy's rights decide what each page shows and allows. Sessions live
// in memory (a random ID, an idle and an absolute expiry, a bounded
// count); the cookie is HttpOnly, Secure, SameSite=Strict and scoped to
// /console; every POST carries the session's anti-forgery token and, when
// the browser sends one, a same-origin Origin or Referer. Keys are shown
// only when the user asks for them with a POST and the policy may see them.
//
// Every page reads without JavaScript; static/console.js only adds live
// updates (server-sent events), confirmation dialogs and a copy button.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/wire"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Manager is the management use case (internal/enrollment) as the console
// uses it.
type Manager interface {
	PutEnrollment(ctx context.Context, e dps.Enrollment, ifMatch string) (dps.Enrollment, error)
	Enrollment(ctx context.Context, id string) (dps.Enrollment, error)
	DeleteEnrollment(ctx context.Context, id, ifMatch string) error
	Enrollments(ctx context.Context, continuation string, limit int) ([]dps.Enrollment, string, error)
	PutGroup(ctx context.Context, g dps.Group, ifMatch string) (dps.Group, error)
	Group(ctx context.Context, id string) (dps.Group, error)
	DeleteGroup(ctx context.Context, id, ifMatch string) error
	Groups(ctx context.Context, continuation string, limit int) ([]dps.Group, string, error)
	Registration(ctx context.Context, id string) (dps.Registration, error)
	DeleteRegistration(ctx context.Context, id, ifMatch string) error
	Registrations(ctx context.Context, groupID, continuation string, limit int) ([]dps.Registration, string, error)
	PutCA(ctx context.Context, name, certificate, ifMatch string) (dps.CACertificate, error)
	CA(ctx context.Context, name string) (dps.CACertificate, error)
	CAs(ctx context.Context) ([]dps.CACertificate, error)
	DeleteCA(ctx context.Context, name, ifMatch string) error
	GenerateVerificationCode(ctx context.Context, name string) (dps.CACertificate, error)
	VerifyCA(ctx context.Context, name, certificate string, now time.Time) (dps.CACertificate, error)
}

// Hub is the built-in hubs' use case (internal/iothub) as the console
// uses it.
type Hub interface {
	Query(ctx context.Context, hub, text, continuation string, maxItems int) (iothub.QueryResult, error)
	GetDevice(ctx context.Context, hub, deviceID string) (iothub.Device, error)
	ServiceTwin(ctx context.Context, hub, deviceID string) (iothub.ServiceTwin, error)
	ReplaceTwin(ctx context.Context, hub, deviceID string, body []byte, ifMatch string) (iothub.ServiceTwin, error)
	UpdateTwin(ctx context.Context, hub, deviceID string, body []byte, ifMatch string) (iothub.ServiceTwin, error)
	InvokeMethod(ctx context.Context, hub, deviceID, name string, payload json.RawMessage, timeout time.Duration) (iothub.MethodResult, error)
	SendC2D(ctx context.Context, hub, deviceID string, m dps.CloudMessage) (dps.CloudMessage, error)
	Events(ctx context.Context, hub string, from int64, limit int, wait time.Duration) (iothub.EventPage, error)
	EventWaitsEnded() <-chan struct{}
	Statistics(ctx context.Context, hub string) (iothub.RegistryStatistics, error)
	ConnectedDevices(hub string) int
}

// Faults is the fault injection rules (internal/faults' Injector).
type Faults interface {
	List() []faults.Status
	Put(r faults.Rule) (faults.Status, error)
	Delete(name string) (faults.Status, bool)
}

// EventFilter selects registration events; empty members match every
// event.
type EventFilter struct {
	RegistrationID string // exact, any case
	Group          string // the enrollment group, exact, any case
	Kind           dps.EventKind
	Since          time.Time // events at or after this time
}

// Match reports whether e passes the filter.
func (f EventFilter) Match(e dps.RegistrationEvent) bool {
	return (f.RegistrationID == "" || strings.EqualFold(f.RegistrationID, e.RegistrationID)) &&
		(f.Group == "" || strings.EqualFold(f.Group, e.EnrollmentGroup)) &&
		(f.Kind == "" || f.Kind == e.Kind) &&
		(f.Since.IsZero() || !e.Time.Before(f.Since))
}

// RegistrationEvents is the registration-events feed as the console reads
// it.
type RegistrationEvents interface {
	// Read returns up to limit events with a Seq greater than after that
	// pass filter, in Seq order.
	Read(ctx context.Context, after int64, limit int, filter EventFilter) ([]dps.RegistrationEvent, error)
	// Latest returns up to limit events with a Seq less than before (≤ 0:
	// from the newest) that pass filter, newest first.
	Latest(ctx context.Context, before int64, limit int, filter EventFilter) ([]dps.RegistrationEvent, error)
	// Follow delivers every event with a Seq greater than after, in Seq
	// order, as it is appended, until ctx ends; then the channel closes
	// (it may close earlier, when the feed stops).
	Follow(ctx context.Context, after int64) (<-chan dps.RegistrationEvent, error)
}

// Authorizer checks a service API SAS token for a right (internal/access'
// Checker).
type Authorizer interface {
	Check(token, path string, right access.Right) error
}

// LinkedHub is an IoT hub the instance assigns devices to.
type LinkedHub struct {
	HostName string
	BuiltIn  bool // served by dpsd itself (its devices have pages here)
}

// Options configure a Handler.
type Options struct {
	Manager Manager
	// Service checks the DPS service API's access policies; ServiceHost
	// is a host name it accepts in a token's resource.
	Service     Authorizer
	ServiceHost string
	// Hub is the built-in hubs (nil: none); HubAuth checks each built-in
	// hub's access policies, keyed by its host name in lower case.
	Hub     Hub
	HubAuth map[string]Authorizer
	// LinkedHubs are the instance's hubs, built-in and remote.
	LinkedHubs []LinkedHub
	// Faults is the fault injection rules (nil: the page says fault
	// injection is not available).
	Faults Faults
	// Events is the registration-events feed (nil: the feed page and the
	// overview's registration figures say the feed is not available).
	Events RegistrationEvents
	// Health reports whether the store answers and takes writes (nil:
	// not shown).
	Health  func(ctx context.Context) error
	IDScope string
	Logger  *slog.Logger
	Now     func() time.Time
	// SessionIdle ends a session after this long without a request
	// (default 30 minutes); SessionMaxAge after this long in any case
	// (default 12 hours); MaxSessions bounds the sessions held (default
	// 1000; the least recently used make room).
	SessionIdle   time.Duration
	SessionMaxAge time.Duration
	MaxSessions   int
	// SignInBurst sign-in attempts are allowed per source address at
	// once, then one per SignInEvery (defaults 10 and 6 s).
	SignInBurst int
	SignInEvery time.Duration
	// Heartbeat is how long a live stream stays silent at most (default
	// 15 s); at each, the stream ends if its session has.
	Heartbeat time.Duration
}

// Handler serves the console under /console/.
type Handler struct {
	o        Options
	mux      *http.ServeMux
	pages    map[string]*template.Template
	static   http.Handler
	sessions *sessions
	signIns  *limiter
	// stop is closed by Close: the live streams end.
	stop      chan struct{}
	closeOnce sync.Once
}

// Close ends the live streams (server-sent events), now and later, so
// that a server's graceful shutdown does not wait for them.
func (h *Handler) Close() {
	h.closeOnce.Do(func() { close(h.stop) })
}

// Prefix is the path the console is served under.
const Prefix = "/console/"

// New returns a Handler.
func New(o Options) (*Handler, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SessionIdle <= 0 {
		o.SessionIdle = 30 * time.Minute
	}
	if o.SessionMaxAge <= 0 {
		o.SessionMaxAge = 12 * time.Hour
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 1000
	}
	if o.SignInBurst <= 0 {
		o.SignInBurst = 10
	}
	if o.SignInEvery <= 0 {
		o.SignInEvery = 6 * time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = defaultHeartbeat
	}
	if o.Manager == nil || o.Service == nil {
		return nil, errors.New("console: Manager and Service are required")
	}
	h := &Handler{o: o, mux: http.NewServeMux(), stop: make(chan struct{}),
		sessions: newSessions(o.SessionIdle, o.SessionMaxAge, o.MaxSessions),
		signIns:  newLimiter(o.SignInBurst, o.SignInEvery, 10_000)}
	var err error
	if h.pages, err = parsePages(); err != nil {
		return nil, err
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	h.static = http.StripPrefix("/console/static/", http.FileServerFS(static))
	h.routes()
	return h, nil
}

// need decides whether a session may use a route; nil: any signed-in
// session.
type need func(r *http.Request, s *session) (ok bool, service string, right access.Right)

// dpsNeed is a route that needs right of the DPS service.
func dpsNeed(right access.Right) need {
	return func(r *http.Request, s *session) (bool, string, access.Right) {
		return s.has("", right), "", right
	}
}

// hubNeed is a route that needs right of the built-in hub named by the
// path's {hub}.
func hubNeed(right access.Right) need {
	return func(r *http.Request, s *session) (bool, string, access.Right) {
		hub := r.PathValue("hub")
		return s.has(hub, right), hub, right
	}
}

// handler is a console page's handler: it runs for a signed-in session
// that passed the route's need.
type handler func(w http.ResponseWriter, r *http.Request, s *session)

func (h *Handler) routes() {
	m := h.mux
	m.Handle("GET /console/static/", http.HandlerFunc(h.serveStatic))
	m.HandleFunc("GET /console/signin", h.signInForm)
	m.HandleFunc("POST /console/signin", h.signIn)
	m.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
	})
	get := func(pattern string, n need, fn handler) { m.Handle("GET "+pattern, h.page(n, fn)) }
	post := func(pattern string, n need, fn handler) { m.Handle("POST "+pattern, h.action(n, fn)) }

	get("/console/{$}", nil, h.overview)
	post("/console/signout", nil, h.signOut)

	get("/console/enrollments", dpsNeed(access.EnrollmentRead), h.enrollments)
	get("/console/enrollments/new", dpsNeed(access.EnrollmentWrite), h.newEnrollment)
	post("/console/enrollments", dpsNeed(access.EnrollmentWrite), h.createEnrollment)
	get("/console/enrollment/{id}", dpsNeed(access.EnrollmentRead), h.enrollment)
	get("/console/enrollment/{id}/edit", dpsNeed(access.EnrollmentWrite), h.editEnrollment)
	post("/console/enrollment/{id}", dpsNeed(access.EnrollmentWrite), h.updateEnrollment)
	post("/console/enrollment/{id}/status", dpsNeed(access.EnrollmentWrite), h.setEnrollmentStatus)
	post("/console/enrollment/{id}/delete", dpsNeed(access.EnrollmentWrite), h.deleteEnrollment)
	post("/console/enrollment/{id}/keys", dpsNeed(access.EnrollmentWrite), h.revealEnrollmentKeys)

	get("/console/groups", dpsNeed(access.EnrollmentRead), h.groups)
	get("/console/groups/new", dpsNeed(access.EnrollmentWrite), h.newGroup)
	post("/console/groups", dpsNeed(access.EnrollmentWrite), h.createGroup)
	get("/console/group/{id}", dpsNeed(access.EnrollmentRead), h.group)
	get("/console/group/{id}/edit", dpsNeed(access.EnrollmentWrite), h.editGroup)
	post("/console/group/{id}", dpsNeed(access.EnrollmentWrite), h.updateGroup)
	post("/console/group/{id}/status", dpsNeed(access.EnrollmentWrite), h.setGroupStatus)
	post("/console/group/{id}/delete", dpsNeed(access.EnrollmentWrite), h.deleteGroup)
	post("/console/group/{id}/keys", dpsNeed(access.EnrollmentWrite), h.revealGroupKeys)
	post("/console/group/{id}/derive", dpsNeed(access.EnrollmentWrite), h.deriveKey)

	get("/console/registrations", dpsNeed(access.RegistrationStatusRead), h.registrations)
	get("/console/registration/{id}", dpsNeed(access.RegistrationStatusRead), h.registration)
	post("/console/registration/{id}/delete", dpsNeed(access.RegistrationStatusWrite), h.deleteRegistration)

	get("/console/feed", dpsNeed(access.ServiceConfig), h.feed)
	get("/console/feed/stream", dpsNeed(access.ServiceConfig), h.feedStream)

	get("/console/hubs/{hub}", hubNeed(access.RegistryRead), h.hubDevices)
	get("/console/hubs/{hub}/device/{id}", hubNeed(access.RegistryRead), h.hubDevice)
	post("/console/hubs/{hub}/device/{id}/keys", hubNeed(access.RegistryRead), h.revealDeviceKeys)
	post("/console/hubs/{hub}/device/{id}/twin", hubNeed(access.ServiceConnect), h.writeTwin)
	post("/console/hubs/{hub}/device/{id}/method", hubNeed(access.ServiceConnect), h.invokeMethod)
	post("/console/hubs/{hub}/device/{id}/c2d", hubNeed(access.ServiceConnect), h.sendC2D)
	get("/console/hubs/{hub}/device/{id}/telemetry", hubNeed(access.ServiceConnect), h.telemetry)
	get("/console/hubs/{hub}/device/{id}/telemetry/stream", hubNeed(access.ServiceConnect), h.telemetryStream)

	get("/console/certificates", dpsNeed(access.ServiceConfig), h.certificates)
	post("/console/certificates", dpsNeed(access.ServiceConfig), h.addCertificate)
	get("/console/certificate/{name}", dpsNeed(access.ServiceConfig), h.certificate)
	post("/console/certificate/{name}/code", dpsNeed(access.ServiceConfig), h.generateCode)
	post("/console/certificate/{name}/verify", dpsNeed(access.ServiceConfig), h.verifyCertificate)
	post("/console/certificate/{name}/delete", dpsNeed(access.ServiceConfig), h.deleteCertificate)

	get("/console/faults", dpsNeed(access.ServiceConfig), h.faultRules)
	post("/console/faults", dpsNeed(access.ServiceConfig), h.putFault)
	post("/console/fault/{name}/delete", dpsNeed(access.ServiceConfig), h.deleteFault)
}

// ServeHTTP serves the console. Every answer carries a strict content
// security policy (scripts, styles and connections of this origin only,
// no framing) and is not cached, the static files excepted.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "same-origin")
	hdr.Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) serveStatic(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	h.static.ServeHTTP(w, r)
}

// current returns the request's live session.
func (h *Handler) current(r *http.Request) (*session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, false
	}
	return h.sessions.get(c.Value, h.o.Now())
}

// signInRedirect sends a request without a session to the sign-in page,
// back to where it was going after.
func (h *Handler) signInRedirect(w http.ResponseWriter, r *http.Request) {
	next := r.URL.RequestURI()
	if r.Method != http.MethodGet {
		next = Prefix
	}
	http.Redirect(w, r, "/console/signin?next="+url.QueryEscape(next), http.StatusSeeOther)
}

// page wraps a GET handler: a session is required, and the route's need.
func (h *Handler) page(n need, fn handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := h.current(r)
		if !ok {
			h.signInRedirect(w, r)
			return
		}
		if !h.allowed(w, r, s, n) {
			return
		}
		fn(w, r, s)
	})
}

// action wraps a POST handler: a session, its anti-forgery token, a
// same-origin request and the route's need are required, in that order.
func (h *Handler) action(n need, fn handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		s, ok := h.current(r)
		if !ok {
			h.signInRedirect(w, r)
			return
		}
		if !sameOrigin(r) || !tokenEqual(r.PostFormValue("csrf"), s.csrf) {
			h.o.Logger.Info("console: request refused: anti-forgery check failed", "path", r.URL.Path, "source", source(r))
			h.renderStatus(w, r, s, http.StatusForbidden, "Request refused",
				"The form was not sent from this console, or it is out of date. Go back, reload the page and try again.")
			return
		}
		if !h.allowed(w, r, s, n) {
			return
		}
		fn(w, r, s)
	})
}

// maxForm bounds a form's body (a certificate or a twin fits easily).
const maxForm = 256 << 10

// allowed checks the route's need, answering 403 when it is not met.
func (h *Handler) allowed(w http.ResponseWriter, r *http.Request, s *session, n need) bool {
	if n == nil {
		return true
	}
	ok, service, right := n(r, s)
	if ok {
		return true
	}
	what := "the DPS service"
	if service != "" {
		what = "the hub " + service
	}
	g, found := s.grantFor(service)
	if !found && service != "" {
		// A hub's pages need a policy of that hub: offer to add one.
		name, ok := h.isBuiltIn(service)
		if !ok {
			h.renderStatus(w, r, s, http.StatusNotFound, "Not found", fmt.Sprintf("%q is not a built-in hub of this instance.", service))
			return false
		}
		next := Prefix
		if r.Method == http.MethodGet {
			next = r.URL.RequestURI()
		}
		h.render(w, r, s, http.StatusForbidden, "signin", page{Title: "Sign in to " + name, Section: "hub:" + name,
			Data: signInData{Next: next, Hub: name, Token: s.csrf}})
		return false
	}
	msg := fmt.Sprintf("Your sign-in has no access policy of %s with the %s right this page needs.", what, right)
	if found {
		msg = fmt.Sprintf("The access policy %q of %s lacks the %s right this page needs.", g.Policy, what, right)
	}
	h.renderStatus(w, r, s, http.StatusForbidden, "Not allowed", msg)
	return false
}

// errorStatus maps a use case's error to the HTTP status and the message
// shown; an internal error is logged, its text never shown.
func (h *Handler) errorStatus(r *http.Request, err error) (int, string) {
	e := dps.AsError(err)
	if e.Kind == dps.KindInternal {
		h.o.Logger.ErrorContext(r.Context(), "console: request failed", "path", r.URL.Path, "err", err)
		return http.StatusInternalServerError, "Internal error: the server log says more."
	}
	return wire.Status(e.Kind), e.Message
}

// fail renders err as the page's answer.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	status, msg := h.errorStatus(r, err)
	title := http.StatusText(status)
	if status == http.StatusNotFound {
		title = "Not found"
	}
	h.renderStatus(w, r, s, status, title, msg)
}

// builtInHubs are the host names of the built-in hubs.
func (h *Handler) builtInHubs() []string {
	if h.o.Hub == nil {
		return nil
	}
	var out []string
	for _, l := range h.o.LinkedHubs {
		if l.BuiltIn {
			out = append(out, l.HostName)
		}
	}
	return out
}

// isBuiltIn reports whether hub names a built-in hub, and its name as
// configured.
func (h *Handler) isBuiltIn(hub string) (string, bool) {
	for _, b := range h.builtInHubs() {
		if strings.EqualFold(b, hub) {
			return b, true
		}
	}
	return "", false
}

// flash sets the message the session's next page shows.
func (h *Handler) flash(s *session, msg string) {
	h.sessions.mu.Lock()
	defer h.sessions.mu.Unlock()
	s.flashMsg = msg
}

// takeFlash returns and clears the session's message.
func (h *Handler) takeFlash(s *session) string {
	h.sessions.mu.Lock()
	defer h.sessions.mu.Unlock()
	msg := s.flashMsg
	s.flashMsg = ""
	return msg
}

// done redirects after a successful action, with a message for the next
// page.
func (h *Handler) done(w http.ResponseWriter, r *http.Request, s *session, to, msg string) {
	if msg != "" {
		h.flash(s, msg)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}
