package console_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
)

// TestReadOnlyPolicy: a policy with EnrollmentRead and
// RegistrationStatusRead sees the lists and details without any button
// that writes, and every write it sends anyway is refused 403 with
// nothing changed.
func TestReadOnlyPolicy(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	key := e.group("g-1")
	if _, err := e.mgr.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: dps.Settings{Attestation: dps.Attestation{Type: dps.AttestationSymmetricKey}}}, ""); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.mustSignIn(e.reader)

	nav := b.get("/console/").body
	mustContain(t, nav, `href="/console/enrollments"`, `href="/console/registrations"`, `href="/console/feed"`)
	mustNotContain(t, nav, `href="/console/certificates"`, `href="/console/faults"`)

	for path, absent := range map[string][]string{
		"/console/enrollments":      {"New enrollment"},
		"/console/groups":           {"New group"},
		"/console/group/g-1":        {"Edit", "Reveal keys", "Delete", "Derive", "Disable provisioning", key},
		"/console/enrollment/dev-1": {"Edit", "Reveal keys", "Delete", "Disable provisioning"},
		"/console/registrations":    {"Delete"},
	} {
		a := b.get(path)
		if a.status != http.StatusOK {
			t.Errorf("GET %s = %d", path, a.status)
			continue
		}
		for _, s := range absent {
			if strings.Contains(html.UnescapeString(a.body), s) {
				t.Errorf("GET %s shows %q to a read-only policy", path, s)
			}
		}
	}
	for _, path := range []string{"/console/enrollments/new", "/console/groups/new", "/console/group/g-1/edit", "/console/certificates", "/console/faults"} {
		if a := b.get(path); a.status != http.StatusForbidden || !strings.Contains(a.body, `&#34;reader&#34;`) {
			t.Errorf("GET %s = %d, want 403 naming the policy", path, a.status)
		}
	}
	b.get("/console/")
	csrf := csrfOf(b.last)
	for path, form := range map[string]url.Values{
		"/console/groups":                {"id": {"g-new"}, "attestation": {"symmetricKey"}},
		"/console/group/g-1/delete":      {},
		"/console/group/g-1/status":      {"enabled": {"false"}},
		"/console/group/g-1/keys":        {},
		"/console/group/g-1/derive":      {"registrationId": {"d-1"}},
		"/console/group/g-1":             {"enabled": {"on"}},
		"/console/enrollment/dev-1/keys": {},
		"/console/certificates":          {"name": {"ca"}, "certificate": {"x"}},
		"/console/faults":                {"name": {"f"}, "action": {"status"}, "value": {"503"}},
	} {
		form.Set("csrf", csrf)
		a := b.post(path, form)
		if a.status != http.StatusForbidden {
			t.Errorf("POST %s = %d, want 403", path, a.status)
		}
		if strings.Contains(html.UnescapeString(a.body), key) {
			t.Errorf("POST %s answered the group key", path)
		}
	}
	if _, err := e.mgr.Group(ctx, "g-new"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("a refused create made the group: %v", err)
	}
	if g, err := e.mgr.Group(ctx, "g-1"); err != nil || !g.Enabled() {
		t.Errorf("the refused writes changed g-1: %+v %v", g, err)
	}
	if len(e.faults.List()) != 0 {
		t.Error("a refused POST set a fault rule")
	}
}

// TestKeysOnlyWhenRevealed: no page shows a key until the user asks with
// a POST, and only a policy that may see it gets it.
func TestKeysOnlyWhenRevealed(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	key := e.group("g-keys")
	enr, err := e.mgr.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-keys", Settings: dps.Settings{Attestation: dps.Attestation{Type: dps.AttestationSymmetricKey}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	enrKey := string(enr.Attestation.SymmetricKey.PrimaryKey)
	dev, err := e.hub.CreateDevice(ctx, testHub, iothub.Device{DeviceID: "hub-dev"})
	if err != nil {
		t.Fatal(err)
	}
	devKey := string(dev.Auth.PrimaryKey)

	b := e.browser()
	b.mustSignIn(e.owner)
	b.get("/console/signin")
	b.post("/console/signin", url.Values{"connectionString": {e.hubCS}})
	for _, path := range []string{"/console/groups", "/console/group/g-keys", "/console/group/g-keys/edit", "/console/enrollments", "/console/enrollment/dev-keys",
		"/console/enrollment/dev-keys/edit", "/console/hubs/" + testHub, "/console/hubs/" + testHub + "/device/hub-dev"} {
		a := b.get(path)
		if a.status != http.StatusOK {
			t.Fatalf("GET %s = %d\n%s", path, a.status, a.body)
		}
		mustNotContain(t, a.body, key, enrKey, devKey, "REDACTED")
	}
	a := b.post("/console/group/g-keys/keys", nil)
	mustContain(t, a.body, key)
	b.get("/console/enrollment/dev-keys")
	a = b.post("/console/enrollment/dev-keys/keys", nil)
	mustContain(t, a.body, enrKey)
	b.get("/console/hubs/" + testHub + "/device/hub-dev")
	a = b.post("/console/hubs/"+testHub+"/device/hub-dev/keys", nil)
	mustContain(t, a.body, devKey)
	// Reading the page again hides them again.
	mustNotContain(t, b.get("/console/group/g-keys").body, key)

	// Derive: the device key of a registration ID, as devices compute it.
	a = b.post("/console/group/g-keys/derive", url.Values{"registrationId": {"sensor-7"}})
	want := deriveKey(t, key, "sensor-7")
	mustContain(t, a.body, want)
}

// TestHubNeedsItsOwnPolicy: a DPS policy opens no hub page; the hub page
// offers to add one of the hub's policies, and then works.
func TestHubNeedsItsOwnPolicy(t *testing.T) {
	e := newEnv(t, envOptions{})
	if _, err := e.hub.CreateDevice(context.Background(), testHub, iothub.Device{DeviceID: "d-1"}); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.mustSignIn(e.owner)
	a := b.get("/console/hubs/" + testHub)
	if a.status != http.StatusForbidden {
		t.Fatalf("hub page with a DPS policy only = %d, want 403", a.status)
	}
	mustContain(t, a.body, "Add an access policy of the hub "+testHub, `name="hub" value="`+testHub+`"`)
	a = b.post("/console/signin", url.Values{"connectionString": {e.hubCS}, "next": {"/console/hubs/" + testHub}})
	if a.status != http.StatusSeeOther || a.location != "/console/hubs/"+testHub {
		t.Fatalf("adding the hub policy = %d → %q", a.status, a.location)
	}
	mustContain(t, b.get("/console/hubs/"+testHub).body, "d-1")
	if st := b.get("/console/hubs/unknown.example").status; st != http.StatusNotFound {
		t.Errorf("a hub that is not built-in: %d, want 404", st)
	}
}
