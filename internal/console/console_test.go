package console_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/console"
	"github.com/opendps/dps/internal/enrollment"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/store/sqlite"
)

const (
	testHub     = "hub.test"
	serviceHost = "dps.test"
)

func newKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// clock is a test's settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// memFeed is an in-memory registration-events feed.
type memFeed struct {
	mu     sync.Mutex
	events []dps.RegistrationEvent
	wake   chan struct{}
}

func newMemFeed() *memFeed { return &memFeed{wake: make(chan struct{})} }

func (f *memFeed) add(e dps.RegistrationEvent) dps.RegistrationEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	e.Seq = int64(len(f.events) + 1)
	f.events = append(f.events, e)
	close(f.wake)
	f.wake = make(chan struct{})
	return e
}

func (f *memFeed) Read(ctx context.Context, after int64, limit int, filter console.EventFilter) ([]dps.RegistrationEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []dps.RegistrationEvent
	for _, e := range f.events {
		if e.Seq > after && filter.Match(e) && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *memFeed) Latest(ctx context.Context, before int64, limit int, filter console.EventFilter) ([]dps.RegistrationEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []dps.RegistrationEvent
	for i := len(f.events) - 1; i >= 0 && len(out) < limit; i-- {
		if e := f.events[i]; (before <= 0 || e.Seq < before) && filter.Match(e) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *memFeed) Follow(ctx context.Context, after int64) (<-chan dps.RegistrationEvent, error) {
	ch := make(chan dps.RegistrationEvent)
	go func() {
		defer close(ch)
		for {
			f.mu.Lock()
			var next []dps.RegistrationEvent
			for _, e := range f.events {
				if e.Seq > after {
					next = append(next, e)
				}
			}
			wake := f.wake
			f.mu.Unlock()
			for _, e := range next {
				select {
				case ch <- e:
					after = e.Seq
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

// env is a console over real use cases on a SQLite store, served over TLS
// on loopback.
type env struct {
	t                    *testing.T
	srv                  *httptest.Server
	h                    *console.Handler
	store                *sqlite.DB
	mgr                  *enrollment.Service
	hub                  *iothub.Service
	faults               *faults.Injector
	feed                 *memFeed
	clock                *clock
	owner, reader, hubCS string // connection strings
	ownerKey, readerKey  string
}

type envOptions struct {
	noFeed      bool
	maxSessions int
	signInBurst int
	heartbeat   time.Duration // of the live streams (0: the default)
}

func newEnv(t *testing.T, eo envOptions) *env {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "dps.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &env{t: t, store: db, clock: &clock{t: time.Now()}, ownerKey: newKey(), readerKey: newKey()}
	hubKey := newKey()
	e.owner = fmt.Sprintf("HostName=%s;SharedAccessKeyName=owner;SharedAccessKey=%s", serviceHost, e.ownerKey)
	e.reader = fmt.Sprintf("HostName=%s;SharedAccessKeyName=reader;SharedAccessKey=%s", serviceHost, e.readerKey)
	e.hubCS = fmt.Sprintf("HostName=%s;SharedAccessKeyName=iothubowner;SharedAccessKey=%s", testHub, hubKey)
	svc, err := access.New([]access.Policy{
		{Name: "owner", PrimaryKey: e.ownerKey, Rights: []access.Right{access.ServiceConfig, access.EnrollmentRead, access.EnrollmentWrite, access.RegistrationStatusRead, access.RegistrationStatusWrite}},
		{Name: "reader", PrimaryKey: e.readerKey, Rights: []access.Right{access.EnrollmentRead, access.RegistrationStatusRead}},
	}, []string{serviceHost}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hubAuth, err := access.New([]access.Policy{{Name: "iothubowner", PrimaryKey: hubKey, Rights: access.HubRights()}}, []string{testHub}, nil)
	if err != nil {
		t.Fatal(err)
	}
	linked := []dps.LinkedHub{{HostName: testHub, AllocationWeight: 1, ApplyAllocationPolicy: true}, {HostName: "remote.example.net", AllocationWeight: 1, ApplyAllocationPolicy: true}}
	e.mgr = enrollment.New(enrollment.Options{Store: db, LinkedHubs: linked})
	e.hub = iothub.New(iothub.Options{Store: db, Hubs: []string{testHub}, Events: db})
	if e.faults, err = faults.New(faults.Options{}); err != nil {
		t.Fatal(err)
	}
	o := console.Options{
		Manager: e.mgr, Service: svc, ServiceHost: serviceHost,
		Hub: e.hub, HubAuth: map[string]console.Authorizer{testHub: hubAuth},
		LinkedHubs:  []console.LinkedHub{{HostName: testHub, BuiltIn: true}, {HostName: "remote.example.net"}},
		Faults:      e.faults,
		Health:      db.Ping,
		IDScope:     "0ne00000TST",
		Now:         e.clock.now,
		SessionIdle: 30 * time.Minute, SessionMaxAge: 12 * time.Hour,
		MaxSessions: eo.maxSessions, SignInBurst: eo.signInBurst, Heartbeat: eo.heartbeat,
	}
	if !eo.noFeed {
		e.feed = newMemFeed()
		o.Events = e.feed
	}
	if e.h, err = console.New(o); err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewTLSServer(e.h)
	t.Cleanup(func() { e.h.Close(); e.srv.Close() })
	return e
}

// browser is a client with its own cookies.
type browser struct {
	e      *env
	c      *http.Client
	last   string // the body of the last answer
	origin string // the Origin header POSTs carry ("" for none)
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Transport: e.srv.Client().Transport, Jar: jar, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &browser{e: e, c: c, origin: e.srv.URL}
}

type answer struct {
	status   int
	body     string
	location string
	header   http.Header
}

func (b *browser) do(req *http.Request) answer {
	b.e.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	b.last = string(body)
	return answer{resp.StatusCode, string(body), resp.Header.Get("Location"), resp.Header}
}

func (b *browser) get(path string) answer {
	b.e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.e.srv.URL+path, nil)
	return b.do(req)
}

// post sends a form; its csrf field is the token of the last page read
// unless form sets one.
func (b *browser) post(path string, form url.Values) answer {
	b.e.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", csrfOf(b.last))
	}
	req, _ := http.NewRequest(http.MethodPost, b.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if b.origin != "" {
		req.Header.Set("Origin", b.origin)
	}
	return b.do(req)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(body string) string {
	if m := csrfField.FindStringSubmatch(body); m != nil {
		return html.UnescapeString(m[1])
	}
	return ""
}

// signIn signs in with a connection string, or a policy and key.
func (b *browser) signIn(form url.Values) answer {
	b.e.t.Helper()
	b.get("/console/signin")
	return b.post("/console/signin", form)
}

func (b *browser) mustSignIn(cs string) {
	b.e.t.Helper()
	if a := b.signIn(url.Values{"connectionString": {cs}}); a.status != http.StatusSeeOther {
		b.e.t.Fatalf("sign-in: %d\n%s", a.status, a.body)
	}
	if a := b.get("/console/"); a.status != http.StatusOK {
		b.e.t.Fatalf("overview after sign-in: %d", a.status)
	}
}

// mustContain checks that the page holds each of wants, as written in
// the HTML or as the browser shows it (entities decoded).
func mustContain(t *testing.T, body string, wants ...string) {
	t.Helper()
	text := html.UnescapeString(body)
	for _, w := range wants {
		if !strings.Contains(body, w) && !strings.Contains(text, w) {
			t.Errorf("page lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("page:\n%s", body)
	}
}

// mustNotContain checks that the page holds none of nots, neither in the
// HTML nor as the browser shows it.
func mustNotContain(t *testing.T, body string, nots ...string) {
	t.Helper()
	text := html.UnescapeString(body)
	for _, n := range nots {
		if strings.Contains(body, n) || strings.Contains(text, n) {
			t.Errorf("page holds %q", n)
		}
	}
}

// groupKey creates a symmetric-key group with a known primary key.
func (e *env) group(id string) string {
	e.t.Helper()
	key := newKey()
	_, err := e.mgr.PutGroup(context.Background(), dps.Group{ID: id, Settings: dps.Settings{Attestation: dps.Attestation{
		Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: dps.Key(key)}}}}, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return key
}
