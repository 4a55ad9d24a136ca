package manifest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/opendps/dps/internal/dpstest"
)

// deviceKeys are a hub device's keys as its service API answers them.
func deviceKeys(t *testing.T, s *testService, id string) string {
	t.Helper()
	b, _, err := s.t.Hubs[testHub].HubCall(context.Background(), "GET", "/devices/"+id, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := obj(t, string(b))
	sk, _ := o["authentication"].(Object)["symmetricKey"].(Object)
	p, _ := sk["primaryKey"].(string)
	k, _ := sk["secondaryKey"].(string)
	if p == "" || k == "" {
		t.Fatalf("device %s has no keys: %s", id, b)
	}
	return p + " " + k
}

// attestationKeys are an enrollment's or group's keys, read through the
// attestation mechanism API.
func attestationKeys(t *testing.T, s *testService, kind Kind, id string) string {
	t.Helper()
	att, err := s.t.keys(context.Background(), kind, id)
	if err != nil {
		t.Fatal(err)
	}
	sk, _ := att["symmetricKey"].(Object)
	p, _ := sk["primaryKey"].(string)
	k, _ := sk["secondaryKey"].(string)
	if p == "" || k == "" {
		t.Fatalf("%s %s has no keys: %v", kind, id, att)
	}
	return p + " " + k
}

// TestUpdateKeepsHubDeviceKeys: a hub device the file gives without keys
// keeps the keys its hub generated when another member changes (the hub
// generates new ones for a PUT without them).
func TestUpdateKeepsHubDeviceKeys(t *testing.T) {
	s := newService(t)
	doc := "hubDevices:\n  hub.test:\n    - {deviceId: k-1, authentication: {type: sas}%s}\n    - {deviceId: k-2%s}\n"
	if _, res := apply(t, s, parse(t, strings.ReplaceAll(doc, "%s", ""), nil), false); res.Created != 2 || len(res.Failures) != 0 {
		t.Fatalf("create: %v %v", res, res.Failures)
	}
	k1, k2 := deviceKeys(t, s, "k-1"), deviceKeys(t, s, "k-2")
	p, res := apply(t, s, parse(t, strings.ReplaceAll(doc, "%s", ", status: disabled"), nil), false)
	if res.Updated != 2 || len(res.Failures) != 0 {
		t.Fatalf("update: %v %v\n%s", res, res.Failures, written(p))
	}
	if got := deviceKeys(t, s, "k-1"); got != k1 {
		t.Error("k-1 (authentication {type: sas}) has new keys after a status change")
	}
	if got := deviceKeys(t, s, "k-2"); got != k2 {
		t.Error("k-2 (no authentication) has new keys after a status change")
	}
}

var keyedPath = regexp.MustCompile(`^/(enrollments|enrollmentGroups)/[^/]+$`)

// azureKeys behaves as Azure DPS does with keys: its GET shows none (as
// dps's does), and a PUT of a symmetric-key attestation without them
// generates new ones (dps keeps the stored ones).
func azureKeys(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if r.Method == http.MethodPut && keyedPath.MatchString(r.URL.Path) {
		b, _ := io.ReadAll(r.Body)
		var o Object
		if json.Unmarshal(b, &o) == nil {
			if att, _ := o["attestation"].(Object); att != nil && strings.EqualFold(att["type"].(string), "symmetricKey") {
				sk, _ := att["symmetricKey"].(Object)
				if sk == nil {
					sk = Object{}
					att["symmetricKey"] = sk
				}
				for _, k := range []string{"primaryKey", "secondaryKey"} {
					if v, _ := sk[k].(string); v == "" {
						sk[k] = dpstest.Key(64)
					}
				}
			}
			b, _ = json.Marshal(o)
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	}
	next.ServeHTTP(w, r)
}

// TestUpdateKeepsKeysOnAzure: against a service whose GET returns no keys
// and whose PUT without keys generates new ones (Azure DPS), an update of
// an enrollment or group the file gives without keys (or with one) sends
// the current ones.
func TestUpdateKeepsKeysOnAzure(t *testing.T) {
	s := newService(t)
	s.setHook(azureKeys)
	ctx := context.Background()
	primary := dpstest.Key(64)
	doc := `
enrollmentGroups:
  - {enrollmentGroupId: g-1, attestation: {type: symmetricKey}%s}
enrollments:
  - {registrationId: e-1, attestation: {type: symmetricKey}%s}
  - {registrationId: e-2, attestation: {type: symmetricKey, symmetricKey: {primaryKey: "${DPSD_E2}"}}%s}
`
	vars := map[string]string{"DPSD_E2": primary}
	if _, res := apply(t, s, parse(t, strings.ReplaceAll(doc, "%s", ""), vars), false); res.Created != 3 || len(res.Failures) != 0 {
		t.Fatalf("create: %v %v", res, res.Failures)
	}
	before := map[string]string{}
	for id, kind := range map[string]Kind{"g-1": Group, "e-1": Enrollment, "e-2": Enrollment} {
		before[id] = attestationKeys(t, s, kind, id)
	}
	if !strings.HasPrefix(before["e-2"], primary+" ") {
		t.Fatalf("e-2's primary key is not the file's")
	}
	p, res := apply(t, s, parse(t, strings.ReplaceAll(doc, "%s", ", provisioningStatus: disabled"), vars), false)
	if res.Updated != 3 || len(res.Failures) != 0 {
		t.Fatalf("update: %v %v\n%s", res, res.Failures, written(p))
	}
	for id, kind := range map[string]Kind{"g-1": Group, "e-1": Enrollment, "e-2": Enrollment} {
		if got := attestationKeys(t, s, kind, id); got != before[id] {
			t.Errorf("%s %s has new keys after a status change", kind, id)
		}
		if e, _ := s.t.get(ctx, kind, "", id); e["provisioningStatus"] != "disabled" {
			t.Errorf("%s %s: %v", kind, id, e["provisioningStatus"])
		}
	}
}

// TestInitialTwinRetried: a hub device created when its twin write failed
// gets its twin from the next apply (the device's twin is empty: only the
// twin is written, without a PUT of the device); once the twin has tags or
// desired properties it is the device's and never compared again.
func TestInitialTwinRetried(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	vars := map[string]string{"DPSD_TOKEN": "hunter2"}
	doc := `
hubDevices:
  hub.test:
    - {deviceId: t-1, twin: {tags: {site: berlin}}}
    - {deviceId: t-2, twin: {properties: {desired: {token: "${DPSD_TOKEN}"}}}}
    - {deviceId: t-3}
`
	s.setHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if r.Method == http.MethodPatch && strings.HasPrefix(r.URL.Path, "/twins/") {
			http.Error(w, `{"Message":"the twin store is down"}`, http.StatusInternalServerError)
			return
		}
		next.ServeHTTP(w, r)
	})
	_, res := apply(t, s, parse(t, doc, vars), false)
	if res.Created != 1 || len(res.Failures) != 2 || !strings.Contains(res.Failures[0].String(), "created, but its initial twin was not written (the next apply writes it)") {
		t.Fatalf("first apply: %v %v", res, res.Failures)
	}
	s.setHook(nil)

	p := plan(t, s, parse(t, doc, vars), false)
	want := "~ hubDevice hub.test/t-1\n    twin: (none) → {\"tags\":{\"site\":\"berlin\"}}\n~ hubDevice hub.test/t-2\n    twin: (changed)\n0 to create, 2 to update, 0 to delete, 1 unchanged\n"
	if got := written(p); got != want {
		t.Errorf("plan after the failed twin writes:\n%s\nwant:\n%s", got, want)
	}
	before := s.writes.Load()
	if res := p.Apply(ctx, s.t, nil); res.Updated != 2 || len(res.Failures) != 0 {
		t.Fatalf("second apply: %v %v", res, res.Failures)
	}
	if n := s.writes.Load() - before; n != 2 {
		t.Errorf("the twin retries wrote %d times, want 2 (the twins only)", n)
	}
	for id, want := range map[string]string{"t-1": `"site":"berlin"`, "t-2": `"token":"hunter2"`} {
		tw, _, err := s.t.Hubs[testHub].HubCall(ctx, "GET", "/twins/"+id, nil, nil)
		if err != nil || !strings.Contains(string(tw), want) {
			t.Errorf("%s's twin: %v %s", id, err, tw)
		}
	}
	if p := plan(t, s, parse(t, doc, vars), false); p.Changes() {
		t.Errorf("third plan:\n%s", written(p))
	}
	// The twin is the device's now: another initial twin in the file
	// changes nothing.
	if p := plan(t, s, parse(t, strings.Replace(doc, "site: berlin", "site: paris", 1), vars), false); p.Changes() {
		t.Errorf("a changed initial twin of a device with a twin:\n%s", written(p))
	}
}
