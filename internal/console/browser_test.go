package console_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/opendps/dps"
	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "also write the browser test's screenshots of the main pages to docs/img/console-*.png")

// chromiumPath is Debian's Chromium (make deps installs it).
const chromiumPath = "/usr/bin/chromium"

// docShots are the screenshots the README shows (-update-screenshots):
// the test's name of each and its file under docs/img.
var docShots = map[string]string{
	"overview-live": "console-overview.png", "feed-live": "console-feed.png", "group": "console-group.png",
	"registrations": "console-registrations.png", "registration-live": "console-registration.png", "device": "console-device.png",
	"telemetry": "console-telemetry.png",
}

// buildDPSCTL builds the dpsctl binary into a temporary directory.
func buildDPSCTL(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dpsctl")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/opendps/dps/cmd/dpsctl").CombinedOutput(); err != nil {
		t.Fatalf("build dpsctl: %v\n%s", err, out)
	}
	return bin
}

// artifacts is where the browser test writes its screenshots:
// $DPS_TEST_ARTIFACTS/console, or a new temporary directory that is kept.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("DPS_TEST_ARTIFACTS")
	var err error
	if dir != "" {
		dir = filepath.Join(dir, "console")
		err = os.MkdirAll(dir, 0o755)
	} else {
		dir, err = os.MkdirTemp("", "dps-console-screenshots-")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots: %s", dir)
	return dir
}

// ui drives one headless Chromium tab.
type ui struct {
	t    *testing.T
	ctx  context.Context
	base string // https://host:port
	shot string // the artifacts directory
}

func (u *ui) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		html, _ := chromedp.Run(u.ctx, chromedp.OuterHTML(chromedp.CSS("body")))
		u.t.Fatalf("%s: %v\npage:\n%s", what, err, html)
	}
}

func (u *ui) open(path string, wait string) {
	u.t.Helper()
	u.do("open "+path, chromedp.Navigate(u.base+path), chromedp.WaitVisible(chromedp.CSS(wait)))
}

// text is the visible text of the page's main landmark.
func (u *ui) text() string {
	u.t.Helper()
	s, err := chromedp.Run(u.ctx, chromedp.Text(chromedp.CSS("main")))
	if err != nil {
		u.t.Fatal(err)
	}
	return s
}

func (u *ui) eval(js string) string {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		u.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// screenshot writes the whole page as name.png (and to docs/img with
// -update-screenshots for the README's pages).
func (u *ui) screenshot(name string) { u.capture(name, chromedp.FullScreenshot(100)) }

// screenshotTop captures only what the window shows (a long page's top).
func (u *ui) screenshotTop(name string) { u.capture(name, chromedp.CaptureScreenshot()) }

func (u *ui) capture(name string, shot chromedp.Action[[]byte]) {
	u.t.Helper()
	png, err := chromedp.Run(u.ctx, shot)
	if err != nil {
		u.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(u.shot, name+".png"), png, 0o644); err != nil {
		u.t.Fatal(err)
	}
	if doc, ok := docShots[name]; ok && *updateScreenshots {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "img", doc), png, 0o644); err != nil {
			u.t.Fatal(err)
		}
	}
}

// signIn fills the sign-in form with a connection string.
func (u *ui) signIn(cs string) {
	u.t.Helper()
	u.do("sign in", chromedp.SetValue(chromedp.ID("connectionString"), cs), chromedp.Submit(chromedp.ID("connectionString")))
}

func mustHave(t *testing.T, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Fatalf("the page does not show %q:\n%s", w, text)
		}
	}
}

// newUI starts headless Chromium (ended at cleanup) with a tab on base.
func newUI(t *testing.T, base string) *ui {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the browser tests need Chromium at %s (make deps installs it): %v", chromiumPath, err)
	}
	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("force-prefers-reduced-motion", true),
		chromedp.Flag("blink-settings", "preferredColorScheme=1"), // light
		chromedp.IgnoreCertErrors,                                 // the server's certificate is the test's own
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	t.Cleanup(cancel)
	ctx, cancelTab := chromedp.NewContext(alloc, chromedp.WithLogf(func(string, ...any) {}))
	t.Cleanup(cancelTab)
	if err := chromedp.Do(ctx); err != nil { // starts the browser, untimed
		t.Fatalf("start Chromium: %v", err)
	}
	return &ui{t: t, ctx: ctx, base: base, shot: artifacts(t)}
}

// TestBrowserLiveFeed: the feed page and the overview in Chromium, on a
// console with a feed: an event appended while the page is open appears
// on top of the table (JavaScript, server-sent events), and the
// overview charts the last hour.
func TestBrowserLiveFeed(t *testing.T) {
	e := newEnv(t, envOptions{})
	now := time.Now()
	e.group("factory-line-1")
	for i := range 60 {
		at := now.Add(-time.Duration(59-i) * time.Minute).Add(-time.Duration(i%5) * time.Second)
		for j := range (i*7)%5 + 1 {
			id := fmt.Sprintf("sensor-%04d", i*5+j)
			e.feed.add(dps.RegistrationEvent{Time: at, Kind: dps.EventAccepted, RegistrationID: id, EnrollmentGroup: "factory-line-1", Transport: "mqtt", Source: "10.0.4.17:50122"})
			e.feed.add(dps.RegistrationEvent{Time: at, Kind: dps.EventAssigned, RegistrationID: id, EnrollmentGroup: "factory-line-1", Transport: "mqtt", Hub: testHub, DeviceID: id})
		}
		if i%6 == 0 {
			e.feed.add(dps.RegistrationEvent{Time: at, Kind: dps.EventRefused, RegistrationID: "unknown-7", Transport: "https", Source: "10.0.9.3:41000", Code: 401002, Reason: "authentication failed: no enrollment matches"})
		}
		if i%13 == 0 {
			e.feed.add(dps.RegistrationEvent{Time: at, Kind: dps.EventRefused, RegistrationID: "sensor-0001", Transport: "https", Code: 429001, Reason: "throttled: too many registrations"})
		}
	}
	u := newUI(t, e.srv.URL)
	u.open("/console/", "#connectionString")
	u.signIn(e.owner)
	u.do("overview", chromedp.WaitVisible(chromedp.CSS(".chart svg")))
	mustHave(t, u.text(), "Refusals by reason", "authentication failed: no enrollment matches", "throttled")
	u.screenshot("overview-live")
	u.open("/console/feed", "tbody[data-stream]")
	u.do("feed connected", chromedp.WaitVisible(chromedp.CSS(".live.on")))
	e.feed.add(dps.RegistrationEvent{Time: time.Now(), Kind: dps.EventWebhook, RegistrationID: "sensor-0999", EnrollmentGroup: "factory-line-1",
		Webhook: &dps.WebhookCall{URL: "https://alloc.example.net/api/assign", Status: 200, Latency: 38 * time.Millisecond}})
	e.feed.add(dps.RegistrationEvent{Time: time.Now(), Kind: dps.EventAssigned, RegistrationID: "sensor-0999", EnrollmentGroup: "factory-line-1", Transport: "https", Hub: testHub, DeviceID: "sensor-0999"})
	u.do("live row", chromedp.WaitVisible(chromedp.CSS(`tbody[data-stream] tr:first-child a[href="/console/registration/sensor-0999"]`)))
	// The new rows are on top, in order, with the page's own rows below.
	rows := u.eval(`Array.from(document.querySelectorAll("tbody[data-stream] tr")).slice(0, 3).map(r => r.cells[1].textContent.trim()).join(",")`)
	if rows != "assigned,webhook,refused" && rows != "assigned,webhook,assigned" {
		t.Errorf("first rows: %s", rows)
	}
	u.screenshotTop("feed-live")
	// The registration's page: the payloads exchanged and the webhook's
	// outcome, from the feed.
	e.register(dps.Registration{RegistrationID: "sensor-0999", DeviceID: "sensor-0999", AssignedHub: testHub, Status: dps.StatusAssigned,
		Substatus: dps.SubstatusInitialAssignment, EnrollmentGroupID: "factory-line-1", Proof: dps.Proof{Type: dps.AttestationSymmetricKey},
		Payload: json.RawMessage(`{"welcome":"sensor-0999","config":{"interval":30}}`)})
	e.feed.add(dps.RegistrationEvent{Time: time.Now().Add(-time.Second), Kind: dps.EventAccepted, RegistrationID: "sensor-0999", EnrollmentGroup: "factory-line-1",
		Transport: "https", Source: "10.0.4.21:51544", Payload: json.RawMessage(`{"model":"thermo-2","fw":"1.4.2"}`)})
	u.open("/console/registration/sensor-0999", "#payload-title")
	mustHave(t, u.text(), "thermo-2", "welcome", "HTTP 200", "38 ms")
	u.screenshot("registration-live")
	// Filtered: another device's event does not appear.
	u.open("/console/feed?registrationId=sensor-0999", "tbody[data-stream]")
	u.do("filtered feed connected", chromedp.WaitVisible(chromedp.CSS(".live.on")))
	e.feed.add(dps.RegistrationEvent{Time: time.Now(), Kind: dps.EventAccepted, RegistrationID: "other-device"})
	e.feed.add(dps.RegistrationEvent{Time: time.Now(), Kind: dps.EventAccepted, RegistrationID: "sensor-0999"})
	u.do("filtered row", chromedp.WaitVisible(chromedp.CSS(`tbody[data-stream] tr.fresh`)))
	if strings.Contains(u.text(), "other-device") {
		t.Error("the filtered feed shows another device's event")
	}
}

// TestBrowser drives the console of a real dpsd in headless Chromium:
// sign in, create a group, register a device with dpsctl, see it in the
// registrations (and in the live feed when the instance has one), open
// its hub twin and change a desired property that the connected device
// receives, watch its telemetry arrive; a wrong key and a read-only
// policy are refused what they must be. Every page is captured.
func TestBrowser(t *testing.T) {
	ownerKey, readerKey := newKey(), newKey()
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf(`dataDir: %q
listen: { https: "127.0.0.1:0", mqtt: "127.0.0.1:0", admin: "" }
retryAfterSeconds: 1
accessPolicies:
  - { name: owner, primaryKey: %q, rights: [ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite] }
  - { name: reader, primaryKey: %q, rights: [EnrollmentRead, RegistrationStatusRead] }
faults:
  - { name: flaky-polls, match: { registrationId: "flaky-*", operation: poll }, action: { status: 503, retryAfterSeconds: 2 }, times: 3 }
`, filepath.Join(t.TempDir(), "data"), ownerKey, readerKey))
	var dpsctl string
	built := make(chan struct{})
	go func() { defer close(built); dpsctl = buildDPSCTL(t) }()
	p := dpstest.StartDPSD(t, dpstest.BuildDPSD(t), cfg)
	<-built
	if p.HubConnectionString == "" {
		t.Fatal("dpsd printed no hub connection string")
	}
	ownerCS := "HostName=localhost;SharedAccessKeyName=owner;SharedAccessKey=" + ownerKey
	readerCS := "HostName=localhost;SharedAccessKeyName=reader;SharedAccessKey=" + readerKey

	u := newUI(t, "https://"+p.HTTPS)
	ctx := u.ctx

	// Not signed in: every page leads to the sign-in form.
	u.open("/console/groups", "#connectionString")
	u.screenshot("signin")

	// A wrong key is refused, without saying what was wrong; no session.
	u.do("wrong key", chromedp.SetValue(chromedp.ID("policy"), "owner"), chromedp.SetValue(chromedp.ID("key"), newKey()),
		chromedp.Submit(chromedp.ID("policy")), chromedp.WaitVisible(chromedp.CSS(".alert")))
	mustHave(t, u.text(), "Sign-in failed")
	if u.eval(`document.querySelector("nav.side") === null ? "none" : "nav"`) != "none" {
		t.Fatal("a wrong key got the navigation of a signed-in user")
	}

	// Sign in: back to where the user was going.
	u.signIn(ownerCS)
	u.do("groups after sign-in", chromedp.WaitVisible(chromedp.CSS(`a[href="/console/groups/new"]`)))
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{u.base + "/console/"}})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range cookies.Cookies {
		if c.Name == "dps_console" {
			found = true
			if !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteStrict || c.Path != "/console" {
				t.Fatalf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/console", c)
			}
		}
	}
	if !found {
		t.Fatal("no session cookie after sign-in")
	}
	if js := u.eval(`document.cookie`); strings.Contains(js, "dps_console") {
		t.Fatalf("the page's script can read the session cookie: %q", js)
	}
	// A POST without the anti-forgery token is refused.
	if st := u.eval(`fetch("/console/groups", {method: "POST", body: new URLSearchParams({id: "forged", attestation: "symmetricKey"})}).then(r => String(r.status))`); st != "403" {
		t.Fatalf("POST without the token = %s, want 403", st)
	}

	// Create a group with an initial twin.
	u.open("/console/groups/new", "#id")
	u.screenshot("group-new")
	u.do("create group",
		chromedp.SetValue(chromedp.ID("id"), "factory-line-1"),
		chromedp.SetValue(chromedp.ID("initialTwin"), `{"tags":{"site":"plant-7"},"properties":{"desired":{"interval":30}}}`),
		chromedp.Submit(chromedp.ID("id")),
		chromedp.WaitVisible(chromedp.CSS("p.flash")))
	mustHave(t, u.text(), "Enrollment group factory-line-1 created.", "symmetric key", "plant-7")
	if strings.Contains(u.text(), "Primary key") {
		t.Fatal("the group page shows its keys before they were asked for")
	}
	u.screenshot("group")
	u.do("reveal keys", chromedp.Click(chromedp.CSS(`form[action$="/keys"] button`)), chromedp.WaitVisible(chromedp.CSS("code.secret")))
	groupKey, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("code.secret")))
	if err != nil || groupKey == "" {
		t.Fatalf("group key: %q %v", groupKey, err)
	}
	u.screenshot("group-keys")

	// The live feed, open while a device registers.
	u.open("/console/feed", "main h1")
	if strings.Contains(u.text(), "not available") {
		t.Fatalf("dpsd serves the console without its registration-events feed:\n%s", u.text())
	}
	u.do("feed connected", chromedp.WaitVisible(chromedp.CSS(".live.on")))

	// Register a device with dpsctl.
	out, err := exec.Command(dpsctl, "register", "--endpoint", "https://"+p.HTTPS, "--ca-file", p.CAFile, "--id-scope", p.Scope,
		"--registration-id", "sensor-0042", "--group-key", groupKey, "--payload", `{"model":"thermo-2","fw":"1.4.2"}`).CombinedOutput()
	if err != nil {
		t.Fatalf("dpsctl register: %v\n%s", err, out)
	}
	var res device.Result
	if err := json.Unmarshal(out, &res); err != nil || res.RegistrationState == nil || res.RegistrationState.AssignedHub == "" {
		t.Fatalf("dpsctl register output: %v\n%s", err, out)
	}
	u.do("live feed row", chromedp.WaitVisible(chromedp.CSS(`tbody[data-stream] a[href="/console/registration/sensor-0042"]`)))
	mustHave(t, u.text(), "assigned")
	u.screenshot("feed")

	// The registrations list and the registration's page.
	u.open("/console/registrations", "table")
	mustHave(t, u.text(), "sensor-0042", "assigned", "factory-line-1")
	u.screenshot("registrations")
	u.do("registration page", chromedp.Click(chromedp.CSS(`a[href="/console/registration/sensor-0042"]`)), chromedp.WaitVisible(chromedp.CSS("#payload-title")))
	mustHave(t, u.text(), "sensor-0042", res.RegistrationState.AssignedHub)
	mustHave(t, u.text(), "thermo-2") // the payload, from the feed
	u.screenshot("registration")

	// The device connects to its hub with its derived key.
	devKey, err := device.DeriveKey(groupKey, "sensor-0042")
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hctx, hcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer hcancel()
	hub, err := device.ConnectHub(hctx, device.HubOptions{Host: res.RegistrationState.AssignedHub, DeviceID: res.RegistrationState.DeviceID,
		Credential: device.SymmetricKey(devKey), Address: p.MQTT, TLS: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatalf("device connect: %v", err)
	}
	defer hub.Close()
	desired := make(chan json.RawMessage, 4)
	if err := hub.OnDesired(hctx, func(_ int64, patch json.RawMessage) { desired <- patch }); err != nil {
		t.Fatal(err)
	}

	// Its hub twin: the hub's pages need one of the hub's policies.
	u.do("open the device", chromedp.Click(chromedp.CSS(`a.button[href^="/console/hubs/"]`)), chromedp.WaitVisible(chromedp.CSS("#connectionString")))
	mustHave(t, u.text(), "Add an access policy of the hub")
	u.screenshot("hub-signin")
	u.signIn(p.HubConnectionString)
	u.do("device page", chromedp.WaitVisible(chromedp.ID("twin")))
	mustHave(t, u.text(), "sensor-0042", "connected", `"interval": 30`, "plant-7")
	u.screenshot("device")

	// Change a desired property: the connected device receives it.
	u.do("save the twin",
		chromedp.SetValue(chromedp.ID("twin"), `{"tags":{"site":"plant-7"},"properties":{"desired":{"interval":45,"mode":"eco"}}}`),
		chromedp.Submit(chromedp.ID("twin")),
		chromedp.WaitVisible(chromedp.CSS("p.flash")))
	mustHave(t, u.text(), "Twin saved", `"interval": 45`)
	select {
	case patch := <-desired:
		var got struct {
			Interval int    `json:"interval"`
			Mode     string `json:"mode"`
		}
		if json.Unmarshal(patch, &got) != nil || got.Interval != 45 || got.Mode != "eco" {
			t.Fatalf("the device received %s", patch)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the device did not receive the desired change")
	}
	if _, err := hub.UpdateReported(hctx, map[string]any{"interval": 45, "firmware": "1.4.2"}); err != nil {
		t.Fatal(err)
	}

	// Telemetry arrives on the live tail.
	devicePage, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	u.open(strings.TrimPrefix(devicePage, u.base)+"/telemetry", "tbody[data-stream]")
	u.do("telemetry connected", chromedp.WaitVisible(chromedp.CSS(".live.on")))
	for i, temp := range []string{"21.4", "21.6", "21.9"} {
		if err := hub.Send(hctx, []byte(`{"temperature":`+temp+`}`), map[string]string{"unit": "C", "seq": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	u.do("telemetry row", chromedp.WaitVisible(chromedp.Search(`//pre[contains(., "21.9")]`)))
	u.screenshot("telemetry")
	u.open(strings.TrimPrefix(devicePage, u.base), "#twin")
	mustHave(t, u.text(), "firmware")
	u.screenshot("device")

	// The other pages, each captured.
	for _, pg := range []struct{ path, wait, name, want string }{
		{"/console/", ".stats", "overview", "Linked hubs"},
		{"/console/enrollments", "table", "enrollments", "No individual enrollments yet."},
		{"/console/groups", "table", "groups", "factory-line-1"},
		{"/console/hubs/localhost", "table", "hub-devices", "sensor-0042"},
		{"/console/certificates", "#caname", "certificates", "Add a CA certificate"},
		{"/console/faults", "#fname", "faults", "flaky-polls"},
	} {
		u.open(pg.path, pg.wait)
		mustHave(t, u.text(), pg.want)
		u.screenshot(pg.name)
	}
	// A phone's width: the same pages, one column.
	u.do("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
	u.open("/console/", ".stats")
	if w := u.eval(`String(document.documentElement.scrollWidth)`); w != "390" {
		t.Errorf("the overview is %s px wide on a 390 px screen", w)
	}
	u.screenshot("overview-phone")
	u.open("/console/registrations", "table")
	u.screenshot("registrations-phone")
	u.do("desktop", chromedp.EmulateViewport(1280, 900))

	// A read-only policy: it reads, it is shown no write, and a write
	// sent anyway is refused.
	u.open("/console/", "main")
	u.do("sign out", chromedp.Submit(chromedp.CSS(`form[action="/console/signout"]`)), chromedp.WaitVisible(chromedp.ID("connectionString")))
	u.signIn(readerCS)
	u.do("reader overview", chromedp.WaitVisible(chromedp.CSS(".stats")))
	u.open("/console/group/factory-line-1", "#settings-title")
	for _, sel := range []string{`a[href$="/edit"]`, `form[action$="/keys"]`, `form[action$="/delete"]`, `form[action$="/derive"]`} {
		if u.eval(`document.querySelector('`+sel+`') === null ? "absent" : "present"`) != "absent" {
			t.Errorf("a read-only policy is shown %s", sel)
		}
	}
	if u.eval(`document.querySelector('a[href="/console/certificates"]') === null ? "absent" : "present"`) != "absent" {
		t.Error("a read-only policy is shown the CA certificates")
	}
	post := func(path, body string) string {
		return u.eval(`fetch("` + path + `", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
			body: "csrf=" + encodeURIComponent(document.querySelector('input[name=csrf]').value) + "&` + body + `"}).then(r => String(r.status))`)
	}
	for path, body := range map[string]string{
		"/console/groups":                          "id=reader-made&attestation=symmetricKey",
		"/console/group/factory-line-1/keys":       "",
		"/console/group/factory-line-1/delete":     "",
		"/console/registration/sensor-0042/delete": "",
		"/console/faults":                          "name=x&action=status&value=503",
	} {
		if st := post(path, body); st != "403" {
			t.Errorf("read-only POST %s = %s, want 403", path, st)
		}
	}
	u.open("/console/groups/new", "main h1")
	mustHave(t, u.text(), "lacks the EnrollmentWrite right")
	u.screenshot("refused")
	u.open("/console/registrations", "table")
	mustHave(t, u.text(), "sensor-0042") // still there: the delete was refused
	u.open("/console/groups", "table")
	if strings.Contains(u.text(), "reader-made") {
		t.Fatal("the read-only policy created a group")
	}
}
