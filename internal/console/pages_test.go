package console_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/iothub"
)

func deriveKey(t *testing.T, groupKey, regID string) string {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(groupKey)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte(regID))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// register writes a finished registration as the registration engine
// would.
func (e *env) register(reg dps.Registration) {
	e.t.Helper()
	now := time.Now()
	reg.Created, reg.Updated = now, now
	_, err := e.store.CreateOperation(context.Background(), dps.Operation{ID: "op-" + reg.RegistrationID, RegistrationID: reg.RegistrationID,
		EnrollmentGroupID: reg.EnrollmentGroupID, Status: reg.Status, Result: &reg, Created: now, Updated: now})
	if err != nil {
		e.t.Fatal(err)
	}
}

// TestEveryPage renders each page with data in it.
func TestEveryPage(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	e.group("g-1")
	if _, err := e.mgr.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: dps.Settings{Attestation: dps.Attestation{Type: dps.AttestationSymmetricKey},
		InitialTwin: json.RawMessage(`{"tags":{"site":"lab"}}`)}}, ""); err != nil {
		t.Fatal(err)
	}
	e.register(dps.Registration{RegistrationID: "dev-1", DeviceID: "dev-1", AssignedHub: testHub, Status: dps.StatusAssigned, Payload: json.RawMessage(`{"fw":"2.1"}`)})
	e.register(dps.Registration{RegistrationID: "g-dev-1", DeviceID: "g-dev-1", AssignedHub: testHub, Status: dps.StatusAssigned, EnrollmentGroupID: "g-1"})
	e.register(dps.Registration{RegistrationID: "g-dev-2", EnrollmentGroupID: "g-1", Status: dps.StatusFailed, ErrorCode: 400207, ErrorMessage: "webhook said no"})
	if _, err := e.hub.CreateDevice(ctx, testHub, iothub.Device{DeviceID: "dev-1"}); err != nil {
		t.Fatal(err)
	}
	dev, _ := e.hub.GetDevice(ctx, testHub, "dev-1")
	if _, err := e.hub.Send(ctx, iothub.Identity{Hub: testHub, DeviceID: "dev-1", GenerationID: dev.GenerationID, Method: "sas"},
		dps.Message{MessageID: "m-1", Properties: map[string]string{"temp": "21.5"}, Body: []byte(`{"t":21.5}`)}); err != nil {
		t.Fatal(err)
	}
	now := e.clock.now()
	e.feed.add(dps.RegistrationEvent{Time: now.Add(-2 * time.Minute), Kind: dps.EventAccepted, RegistrationID: "dev-1", Transport: "https", Source: "127.0.0.1:5555", Payload: json.RawMessage(`{"model":"t1"}`)})
	e.feed.add(dps.RegistrationEvent{Time: now.Add(-2 * time.Minute), Kind: dps.EventWebhook, RegistrationID: "dev-1", Webhook: &dps.WebhookCall{URL: "https://fn.example/api/alloc", Status: 200, Latency: 42 * time.Millisecond}})
	e.feed.add(dps.RegistrationEvent{Time: now.Add(-time.Minute), Kind: dps.EventAssigned, RegistrationID: "dev-1", Hub: testHub, DeviceID: "dev-1", Transport: "https"})
	e.feed.add(dps.RegistrationEvent{Time: now.Add(-time.Minute), Kind: dps.EventRefused, RegistrationID: "intruder", Transport: "mqtt", Code: 401002, Reason: "authentication failed"})
	e.feed.add(dps.RegistrationEvent{Time: now, Kind: dps.EventRefused, RegistrationID: "intruder", Transport: "mqtt", Code: 401002, Reason: "authentication failed"})
	e.faults.Put(fault("slow-polls"))
	caPEM, _ := newCA(t)
	if _, err := e.mgr.PutCA(ctx, "root-1", caPEM, ""); err != nil {
		t.Fatal(err)
	}

	b := e.browser()
	b.mustSignIn(e.owner)
	b.get("/console/signin")
	b.post("/console/signin", url.Values{"connectionString": {e.hubCS}})
	hub := "/console/hubs/" + testHub
	for path, wants := range map[string][]string{
		"/console/":                                      {"Overview", "Healthy", "Individual enrollments", "Registrations per minute", "authentication failed", "<svg", "remote.example.net", testHub},
		"/console/enrollments":                           {"dev-1", "assigned", testHub, "New enrollment"},
		"/console/enrollments?q=DEV":                     {"dev-1"},
		"/console/enrollments/new":                       {"New enrollment", `name="attestation"`, `name="initialTwin"`, `name="webhookUrl"`},
		"/console/enrollment/dev-1":                      {"Registration state", "Reveal keys", "site", "Edit"},
		"/console/enrollment/dev-1/edit":                 {"Save", `name="etag"`, "site"},
		"/console/groups":                                {"g-1", "New group"},
		"/console/groups/new":                            {"New enrollment group", "Signing"},
		"/console/group/g-1":                             {"Derive a device key", "Reveal keys", "Registrations of this group"},
		"/console/group/g-1/edit":                        {"Edit enrollment group g-1"},
		"/console/registrations":                         {"dev-1", "g-dev-1", "g-dev-2", "400207"},
		"/console/registrations?group=g-1&status=failed": {"g-dev-2"},
		"/console/registration/dev-1":                    {"Payload exchanged", "&#34;model&#34;: &#34;t1&#34;", "&#34;fw&#34;: &#34;2.1&#34;", "HTTP 200", "42 ms", "Open the device"},
		"/console/feed":                                  {"Live feed", "intruder", "401002", `data-stream="/console/feed/stream?after=5"`},
		"/console/feed?kind=assigned":                    {"dev-1"},
		hub:                                              {"dev-1", "Connected to this node", "Query condition"},
		hub + "/device/dev-1":                            {"Identity", "Desired properties", "Edit the twin", "Invoke a direct method", "Send a cloud-to-device message", "Reveal device keys"},
		hub + "/device/dev-1/telemetry":                  {"m-1", "temp", "21.5", `data-stream="`},
		"/console/certificates":                          {"root-1", "unverified", "Add a CA certificate"},
		"/console/certificate/root-1":                    {"Proof of possession", "Generate code"},
		"/console/faults":                                {"slow-polls", "delay 1500 ms", "Add or replace a rule"},
	} {
		t.Run(strings.TrimPrefix(path, "/console/"), func(t *testing.T) {
			a := b.get(path)
			if a.status != http.StatusOK {
				t.Fatalf("GET %s = %d\n%s", path, a.status, a.body)
			}
			mustContain(t, a.body, wants...)
			mustContain(t, a.body, `<main id="main"`, `<nav class="side" aria-label="Main">`, `lang="en"`)
			checkLabels(t, a.body)
		})
	}
	// Filters leave the others out.
	mustNotContain(t, b.get("/console/registrations?group=g-1&status=failed").body, "g-dev-1<", ">dev-1<")
	mustNotContain(t, b.get("/console/feed?kind=assigned").body, "intruder")
	mustNotContain(t, b.get("/console/enrollments?q=nomatch").body, ">dev-1<")
}

var inputID = regexp.MustCompile(`<(?:input|select|textarea)\b[^>]*\bid="([^"]+)"`)

// checkLabels: every form control with an ID has a label for it (hidden
// inputs carry no ID).
func checkLabels(t *testing.T, body string) {
	t.Helper()
	for _, m := range inputID.FindAllStringSubmatch(body, -1) {
		if !strings.Contains(body, `for="`+m[1]+`"`) {
			t.Errorf("control #%s has no label", m[1])
		}
	}
}

// TestFeedNotAvailable: without a feed the pages say so.
func TestFeedNotAvailable(t *testing.T) {
	e := newEnv(t, envOptions{noFeed: true})
	e.register(dps.Registration{RegistrationID: "r-1", Status: dps.StatusAssigned, AssignedHub: testHub, DeviceID: "r-1"})
	e.group("g")
	b := e.browser()
	b.mustSignIn(e.owner)
	mustContain(t, b.get("/console/feed").body, "feed is not available")
	mustContain(t, b.get("/console/").body, "feed is not available")
	mustContain(t, b.get("/console/registration/r-1").body, "feed is not available")
	if st := b.get("/console/feed/stream").status; st != http.StatusNotFound {
		t.Errorf("stream without a feed: %d", st)
	}
}

func TestEnrollmentForms(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	b := e.browser()
	b.mustSignIn(e.owner)

	b.get("/console/groups/new")
	a := b.post("/console/groups", url.Values{"id": {"factory"}, "attestation": {"symmetricKey"}, "enabled": {"on"}, "hub": {testHub},
		"allocationPolicy": {"custom"}, "webhookUrl": {"https://fn.example/api/alloc?code=secret"}, "apiVersion": {"2021-10-01"},
		"reprovision": {"reset"}, "initialTwin": {`{"tags":{"line":"a"},"properties":{"desired":{"interval":30}}}`}})
	if a.status != http.StatusSeeOther || a.location != "/console/group/factory" {
		t.Fatalf("create = %d → %q\n%s", a.status, a.location, a.body)
	}
	g, err := e.mgr.Group(ctx, "factory")
	if err != nil {
		t.Fatal(err)
	}
	if g.AllocationPolicy != dps.AllocationCustom || g.CustomAllocation.WebhookURL != "https://fn.example/api/alloc?code=secret" ||
		len(g.IoTHubs) != 1 || g.IoTHubs[0] != testHub || string(g.InitialTwin) != `{"tags":{"line":"a"},"properties":{"desired":{"interval":30}}}` ||
		g.Reprovision() != (dps.ReprovisionPolicy{UpdateHubAssignment: true}) || g.Attestation.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("created group %+v", g)
	}
	// The webhook URL's query (a function key) is masked as the keys are,
	// even to a writer, until an explicit reveal.
	body := b.get("/console/group/factory").body
	mustContain(t, body, "Enrollment group factory created.", "https://fn.example/api/alloc?****", "Reveal URL and keys")
	mustNotContain(t, body, "code=secret")
	mustContain(t, b.post("/console/group/factory/keys", nil).body, "https://fn.example/api/alloc?code=secret")
	// A reader sees the webhook URL masked (its query may hold a key).
	r := e.browser()
	r.mustSignIn(e.reader)
	body = r.get("/console/group/factory").body
	mustNotContain(t, body, "code=secret", "Reveal URL")
	mustContain(t, body, "https://fn.example/api/alloc?****")

	// Edit: the form comes back filled in; the keys stay.
	a = b.get("/console/group/factory/edit")
	mustContain(t, a.body, "fn.example", `value="reset" selected`, "interval")
	a = b.post("/console/group/factory", url.Values{"etag": {g.ETag}, "enabled": {"on"}, "allocationPolicy": {"hashed"}, "reprovision": {"never"}, "initialTwin": {""}})
	if a.status != http.StatusSeeOther {
		t.Fatalf("edit = %d\n%s", a.status, a.body)
	}
	g2, _ := e.mgr.Group(ctx, "factory")
	if g2.AllocationPolicy != dps.AllocationHashed || g2.CustomAllocation != nil || (g2.InitialTwin != nil && string(g2.InitialTwin) != "null") || g2.Reprovision().UpdateHubAssignment ||
		g2.Attestation.SymmetricKey.PrimaryKey != g.Attestation.SymmetricKey.PrimaryKey {
		t.Fatalf("edited group %+v", g2)
	}
	// A stale form (the old ETag) is refused and shown again.
	b.get("/console/group/factory/edit")
	a = b.post("/console/group/factory", url.Values{"etag": {g.ETag}, "enabled": {"on"}})
	if a.status != http.StatusPreconditionFailed || !strings.Contains(a.body, `role="alert"`) {
		t.Fatalf("stale edit = %d", a.status)
	}
	// Invalid input: the form again, with the error and what was typed.
	b.get("/console/groups/new")
	a = b.post("/console/groups", url.Values{"id": {"bad twin"}, "attestation": {"symmetricKey"}, "initialTwin": {`{"tags":`}})
	if a.status != http.StatusBadRequest {
		t.Fatalf("invalid create = %d", a.status)
	}
	mustContain(t, a.body, `role="alert"`, `value="bad twin"`)

	// Disable, enable, delete.
	b.get("/console/group/factory")
	if a = b.post("/console/group/factory/status", url.Values{"enabled": {"false"}}); a.status != http.StatusSeeOther {
		t.Fatalf("disable = %d", a.status)
	}
	if g, _ := e.mgr.Group(ctx, "factory"); g.Enabled() {
		t.Fatal("not disabled")
	}
	mustContain(t, b.get("/console/group/factory").body, "disabled", "Enable provisioning")
	g3, _ := e.mgr.Group(ctx, "factory")
	if a = b.post("/console/group/factory/delete", url.Values{"etag": {g3.ETag}}); a.status != http.StatusSeeOther {
		t.Fatalf("delete = %d", a.status)
	}
	if _, err := e.mgr.Group(ctx, "factory"); dps.KindOf(err) != dps.KindNotFound {
		t.Fatalf("after delete: %v", err)
	}

	// An individual enrollment with X.509 and a device ID.
	caPEM, _ := newCA(t)
	b.get("/console/enrollments/new")
	a = b.post("/console/enrollments", url.Values{"id": {"cam-1"}, "deviceId": {"camera-1"}, "attestation": {"x509"}, "certificate": {caPEM}, "enabled": {"on"}})
	if a.status != http.StatusSeeOther {
		t.Fatalf("x509 create = %d\n%s", a.status, alertOf(a.body))
	}
	mustContain(t, b.get("/console/enrollment/cam-1").body, "camera-1", "CN=test root", "SHA-256")
	b.get("/console/enrollment/cam-1")
	if a = b.post("/console/enrollment/cam-1/delete", nil); a.status != http.StatusSeeOther {
		t.Fatalf("enrollment delete = %d", a.status)
	}
}

func TestRegistrationDelete(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.register(dps.Registration{RegistrationID: "r-del", Status: dps.StatusAssigned, AssignedHub: testHub, DeviceID: "r-del"})
	b := e.browser()
	b.mustSignIn(e.owner)
	mustContain(t, b.get("/console/registration/r-del").body, "Delete the registration record")
	if a := b.post("/console/registration/r-del/delete", nil); a.status != http.StatusSeeOther {
		t.Fatalf("delete = %d", a.status)
	}
	if _, err := e.mgr.Registration(context.Background(), "r-del"); dps.KindOf(err) != dps.KindNotFound {
		t.Fatalf("after delete: %v", err)
	}
	if st := b.get("/console/registration/r-del").status; st != http.StatusNotFound {
		t.Errorf("deleted registration page: %d", st)
	}
}

func TestHubDevicePage(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	if _, err := e.hub.CreateDevice(ctx, testHub, iothub.Device{DeviceID: "dev-1"}); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.mustSignIn(e.hubCS)
	page := "/console/hubs/" + testHub + "/device/dev-1"
	a := b.get(page)
	tw, _ := e.hub.ServiceTwin(ctx, testHub, "dev-1")
	a = b.post(page+"/twin", url.Values{"etag": {tw.ETag}, "mode": {"replace"}, "twin": {`{"tags":{"room":"7"},"properties":{"desired":{"interval":5}}}`}})
	if a.status != http.StatusSeeOther {
		t.Fatalf("twin write = %d\n%s", a.status, a.body)
	}
	body := b.get(page).body
	mustContain(t, body, "Twin saved (version", "&#34;interval&#34;: 5", "room")
	// The same (now stale) ETag again: refused, the edit kept.
	a = b.post(page+"/twin", url.Values{"etag": {tw.ETag}, "twin": {`{"properties":{"desired":{"interval":6}}}`}})
	if a.status != http.StatusPreconditionFailed {
		t.Fatalf("stale twin write = %d", a.status)
	}
	mustContain(t, a.body, "The twin changed since this page was loaded", "interval&#34;:6")
	// Merge mode patches.
	b.get(page)
	a = b.post(page+"/twin", url.Values{"etag": {""}, "mode": {"patch"}, "twin": {`{"properties":{"desired":{"mode":"eco"}}}`}})
	if a.status != http.StatusSeeOther {
		t.Fatalf("twin patch = %d\n%s", a.status, alertOf(a.body))
	}
	tw, _ = e.hub.ServiceTwin(ctx, testHub, "dev-1")
	if d := string(tw.Twin.Properties.Desired); !strings.Contains(d, `"interval":5`) || !strings.Contains(d, `"mode":"eco"`) {
		t.Fatalf("desired after the patch: %s", d)
	}

	// A method on a device that is not connected: the hub's answer, shown.
	b.get(page)
	a = b.post(page+"/method", url.Values{"name": {"reboot"}, "payload": {`{"delay":1}`}, "timeout": {"5"}})
	if a.status != http.StatusNotFound || !strings.Contains(a.body, `role="alert"`) {
		t.Fatalf("method on an offline device = %d", a.status)
	}
	mustContain(t, a.body, `value="reboot"`)
	a = b.post(page+"/method", url.Values{"name": {"reboot"}, "payload": {`{bad`}})
	if a.status != http.StatusBadRequest {
		t.Fatalf("method with a bad payload = %d", a.status)
	}

	// C2D: queued for the device.
	b.get(page)
	a = b.post(page+"/c2d", url.Values{"body": {"hello device"}, "messageId": {"c-1"}, "ack": {"full"}, "properties": {"kind=greeting\nlang=en"}})
	if a.status != http.StatusSeeOther {
		t.Fatalf("c2d = %d\n%s", a.status, alertOf(a.body))
	}
	mustContain(t, b.get(page).body, "Cloud-to-device message queued", "1 cloud-to-device")
	if n, _ := e.hub.QueueDepth(ctx, testHub, "dev-1"); n != 1 {
		t.Fatalf("queue depth %d", n)
	}
	a = b.post(page+"/c2d", url.Values{"body": {"x"}, "properties": {"no equals sign"}})
	if a.status != http.StatusBadRequest {
		t.Fatalf("c2d with bad properties = %d", a.status)
	}
}

func TestCertificateProofOfPossession(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	caPEM, caKey := newCA(t)
	b := e.browser()
	b.mustSignIn(e.owner)
	b.get("/console/certificates")
	a := b.post("/console/certificates", url.Values{"name": {"root"}, "certificate": {caPEM}})
	if a.status != http.StatusSeeOther || a.location != "/console/certificate/root" {
		t.Fatalf("add = %d → %q\n%s", a.status, a.location, alertOf(a.body))
	}
	b.get("/console/certificate/root")
	if a = b.post("/console/certificate/root/code", nil); a.status != http.StatusSeeOther {
		t.Fatalf("code = %d", a.status)
	}
	ca, _ := e.mgr.CA(ctx, "root")
	if ca.VerificationCode == "" {
		t.Fatal("no code")
	}
	mustContain(t, b.get("/console/certificate/root").body, ca.VerificationCode)
	// A proof with the wrong CN is refused, with the reason.
	a = b.post("/console/certificate/root/verify", url.Values{"certificate": {leaf(t, caPEM, caKey, "WRONG")}})
	if a.status != http.StatusBadRequest || !strings.Contains(alertOf(a.body), "CN") {
		t.Fatalf("wrong proof = %d %q", a.status, alertOf(a.body))
	}
	a = b.post("/console/certificate/root/verify", url.Values{"certificate": {leaf(t, caPEM, caKey, ca.VerificationCode)}})
	if a.status != http.StatusSeeOther {
		t.Fatalf("verify = %d %q", a.status, alertOf(a.body))
	}
	if ca, _ = e.mgr.CA(ctx, "root"); !ca.Verified {
		t.Fatal("not verified")
	}
	mustContain(t, b.get("/console/certificates").body, "verified")
	b.get("/console/certificate/root")
	if a = b.post("/console/certificate/root/delete", url.Values{"etag": {ca.ETag}}); a.status != http.StatusSeeOther {
		t.Fatalf("delete = %d", a.status)
	}
}

func TestFaultRules(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.browser()
	b.mustSignIn(e.owner)
	b.get("/console/faults")
	a := b.post("/console/faults", url.Values{"name": {"busy"}, "registrationId": {"sensor-*"}, "transport": {"https"}, "operation": {"register"},
		"action": {"status"}, "value": {"503"}, "retryAfter": {"7"}, "times": {"2"}})
	if a.status != http.StatusSeeOther {
		t.Fatalf("put = %d %q", a.status, alertOf(a.body))
	}
	list := e.faults.List()
	if len(list) != 1 || list[0].Match.RegistrationID != "sensor-*" || list[0].Action.Status != 503 || list[0].Action.RetryAfterSeconds != 7 || list[0].Times != 2 {
		t.Fatalf("rules %+v", list)
	}
	mustContain(t, b.get("/console/faults").body, "busy", "status 503", "retry after 7 s", "first 2 matches")
	a = b.post("/console/faults", url.Values{"name": {"bad"}, "action": {"status"}, "value": {"200"}})
	if a.status != http.StatusBadRequest || !strings.Contains(alertOf(a.body), "400 and 599") {
		t.Fatalf("invalid rule = %d %q", a.status, alertOf(a.body))
	}
	b.get("/console/faults")
	if a = b.post("/console/fault/busy/delete", nil); a.status != http.StatusSeeOther {
		t.Fatalf("delete = %d", a.status)
	}
	if len(e.faults.List()) != 0 {
		t.Fatal("not deleted")
	}
}

// TestFeedStream: the feed page's stream sends each new event that
// passes its filter as a table row, resuming after Last-Event-ID.
func TestFeedStream(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.browser()
	b.mustSignIn(e.owner)
	e.feed.add(dps.RegistrationEvent{Time: time.Now(), Kind: dps.EventAccepted, RegistrationID: "before"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/console/feed/stream?registrationId=watched", nil)
	req.Header.Set("Last-Event-ID", "1")
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("stream = %d %s", resp.StatusCode, ct)
	}
	e.feed.add(dps.RegistrationEvent{Time: time.Now(), Kind: dps.EventAccepted, RegistrationID: "other"})
	e.feed.add(dps.RegistrationEvent{Time: time.Now(), Kind: dps.EventAssigned, RegistrationID: "watched", Hub: testHub, DeviceID: "watched"})
	rd := bufio.NewReader(resp.Body)
	id, data := readRow(t, rd)
	if id != "3" || !strings.Contains(data, "watched") || !strings.Contains(data, "<tr>") || strings.Contains(data, "other") {
		t.Fatalf("row id %s: %s", id, data)
	}
	// Close ends the stream: the body ends (EOF) soon, not at the
	// request's deadline.
	e.h.Close()
	requireEOF(t, rd)
}

// requireEOF requires the stream read by rd to end within 2 s.
func requireEOF(t *testing.T, rd *bufio.Reader) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, rd)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the stream ended with %v, want EOF", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the stream is still open 2 s later")
	}
}

// readRow reads the next "row" event of a stream.
func readRow(t *testing.T, r *bufio.Reader) (id, data string) {
	t.Helper()
	var isRow bool
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "event: row":
			isRow = true
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ") + "\n"
		case line == "" && isRow:
			return id, data
		case line == "":
			id, data = "", ""
		}
	}
}

func TestTelemetryStream(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	dev, err := e.hub.CreateDevice(ctx, testHub, iothub.Device{DeviceID: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.mustSignIn(e.hubCS)
	page := b.get("/console/hubs/" + testHub + "/device/dev-1/telemetry").body
	m := regexp.MustCompile(`data-stream="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no stream on the page:\n%s", page)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(sctx, http.MethodGet, e.srv.URL+strings.ReplaceAll(m[1], "&amp;", "&"), nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	id := iothub.Identity{Hub: testHub, DeviceID: "dev-1", GenerationID: dev.GenerationID, Method: "sas"}
	if _, err := e.hub.Send(ctx, id, dps.Message{MessageID: "live-1", Body: []byte("hello <b>")}); err != nil {
		t.Fatal(err)
	}
	_, data := readRow(t, bufio.NewReader(resp.Body))
	if !strings.Contains(data, "live-1") || !strings.Contains(data, "hello &lt;b&gt;") {
		t.Fatalf("row: %s", data)
	}
}

// fault is a valid rule.
func fault(name string) faults.Rule {
	return faults.Rule{Name: name, Action: faults.Action{DelayMs: 1500}}
}

// newCA returns a self-signed CA certificate (PEM) and its key.
func newCA(t *testing.T) (string, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), key
}

// leaf returns a certificate with CN cn signed by the CA.
func leaf(t *testing.T, caPEM string, caKey *ecdsa.PrivateKey, cn string) string {
	t.Helper()
	blk, _ := pem.Decode([]byte(caPEM))
	ca, _ := x509.ParseCertificate(blk.Bytes)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
