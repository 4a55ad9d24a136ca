package manifest

import (
	"strings"
	"testing"

	"github.com/opendps/dps/internal/dpstest"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestParseFormats(t *testing.T) {
	key := dpstest.Key(32)
	yamlDoc := `
certificates: []
enrollmentGroups:
  - enrollmentGroupId: line-1
    attestation: {type: symmetricKey}
enrollments:
  - registrationId: dev-1
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "${DPSD_DEV1_KEY}"}}
    initialTwin: {tags: {site: berlin}, properties: {desired: {interval: 30}}}
    certificateAuthorityName: future-field
hubDevices:
  localhost:
    - deviceId: sensor-1
      authentication: {type: sas}
      twin: {tags: {site: b}}
`
	jsonDoc := `{"enrollments":[{"registrationId":"dev-1","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"${DPS_KEY}"}}}]}`
	lines := `{"kind":"group","enrollmentGroupId":"line-1","attestation":{"type":"symmetricKey"}}
{"kind":"enrollment","registrationId":"dev-1","attestation":{"type":"symmetricKey"}}
{"kind":"registration","registrationId":"dev-1","status":"assigned"}
{"kind":"hubDevice","hub":"localhost","deviceId":"s-1","authentication":{"type":"sas"},"twin":{"tags":{"a":1}}}
`
	m, err := Parse("m.yaml", []byte(yamlDoc), env(map[string]string{"DPSD_DEV1_KEY": key}))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Items) != 3 {
		t.Fatalf("items: %+v", m.Items)
	}
	// Creation order: groups before enrollments before hub devices.
	if m.Items[0].Kind != Group || m.Items[1].Kind != Enrollment || m.Items[2].Kind != HubDevice {
		t.Errorf("order: %v %v %v", m.Items[0].Kind, m.Items[1].Kind, m.Items[2].Kind)
	}
	e := m.Items[1]
	if got := e.Body["attestation"].(Object)["symmetricKey"].(Object)["primaryKey"]; got != key {
		t.Errorf("the reference was not expanded: %v", got)
	}
	if !e.secret["attestation.symmetricKey.primaryKey"] {
		t.Errorf("the expanded path is not secret: %v", e.secret)
	}
	if e.Body["certificateAuthorityName"] != "future-field" {
		t.Error("an unknown member was not kept")
	}
	if tw := e.Body["initialTwin"].(Object)["properties"].(Object)["desired"].(Object)["interval"]; tw != 30.0 {
		t.Errorf("numbers decode as JSON numbers: %T %v", tw, tw)
	}
	if d := m.Items[2]; d.Hub != "localhost" || d.ID != "sensor-1" || d.Twin == nil || d.Body["twin"] != nil {
		t.Errorf("hub device: %+v", d)
	}
	// certificates: [] manages certificates; every kind given is a scope.
	if len(m.Scopes) != 4 || m.Scopes[0] != (Scope{Kind: Certificate}) {
		t.Errorf("scopes: %v", m.Scopes)
	}

	m, err = Parse("m.json", []byte(jsonDoc), env(map[string]string{"DPS_KEY": key}))
	if err != nil || len(m.Items) != 1 || m.Items[0].ID != "dev-1" || len(m.Scopes) != 1 {
		t.Fatalf("JSON: %v %+v", err, m)
	}
	m, err = Parse("export.jsonl", []byte(lines), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Items) != 3 || m.Registrations != 1 || m.Items[2].Hub != "localhost" || m.Items[2].Body["hub"] != nil || m.Items[0].Body["kind"] != nil {
		t.Errorf("JSON lines: %+v", m)
	}
}

func TestParseProblems(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"unknown member", "enrolments: []", "enrolments: unknown member"},
		{"not a list", "enrollments: {a: 1}", "enrollments: want a list"},
		{"no id", "enrollments: [{attestation: {type: symmetricKey}}]", "registrationId is required"},
		{"bad id", "enrollments: [{registrationId: 'bad id!', attestation: {type: symmetricKey}}]", "registration ID"},
		{"no attestation", "enrollmentGroups: [{enrollmentGroupId: g}]", "attestation is required"},
		{"bad type", "enrollmentGroups: [{enrollmentGroupId: g, attestation: {type: magic}}]", "g"},
		{"twice", "enrollments: [{registrationId: a, attestation: {type: symmetricKey}}, {registrationId: A, attestation: {type: symmetricKey}}]", "is also at"},
		{"unset variable", `enrollments: [{registrationId: a, attestation: {type: symmetricKey, symmetricKey: {primaryKey: "${DPSD_NOPE}"}}}]`, "environment variable DPSD_NOPE is not set"},
		{"other variable", `enrollments: [{registrationId: a, initialTwin: {tags: {h: "${HOME}"}}, attestation: {type: symmetricKey}}]`, "only variables named DPSD_… or DPS_… are expanded"},
		{"certificate", "certificates: [{name: ca, certificate: nope}]", "certificate"},
		{"twin member", "hubDevices: {h: [{deviceId: d, twin: {reported: {}}}]}", "twin.reported"},
		{"hub name", "hubDevices: {'a/b': []}", "not a hub host name"},
		{"kind", `{"kind":"robot","id":"x"}`, `unknown kind "robot"`},
		{"yaml", "enrollments: [", "m:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("m", []byte(tt.doc), env(map[string]string{"HOME": "/root"}))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "/root") {
				t.Errorf("a variable's value is in the error: %v", err)
			}
		})
	}
}

func TestMergeFindsDuplicates(t *testing.T) {
	a, _ := Parse("a.yaml", []byte("enrollments: [{registrationId: d, attestation: {type: symmetricKey}}]"), env(nil))
	b, _ := Parse("b.yaml", []byte("enrollments: [{registrationId: d, attestation: {type: symmetricKey}}]\nhubDevices: {h: []}"), env(nil))
	if _, err := Merge(a, b); err == nil || !strings.Contains(err.Error(), "a.yaml") {
		t.Errorf("merge: %v", err)
	}
	c, _ := Parse("c.yaml", []byte("hubDevices: {h: [{deviceId: D}, {deviceId: d}]}"), env(nil))
	if m, err := Merge(a, c); err != nil || len(m.Items) != 3 || len(m.Hubs()) != 1 {
		t.Errorf("hub device IDs are case-sensitive: %v %+v", err, m)
	}
}

// TestParseExpansion: a manifest's ${DPSD_…} references are expanded and
// $${ is a literal ${ (not a reference, not secret); an export's values
// are data, never expanded — an exported twin's "${DPSD_PGPASSWORD}" stays
// that text, whatever the importer's environment holds.
func TestParseExpansion(t *testing.T) {
	vars := env(map[string]string{"DPSD_PGPASSWORD": "hunter2", "DPSD_SITE": "berlin"})
	m, err := Parse("m.yaml", []byte(`enrollments:
  - registrationId: dev-1
    attestation: {type: symmetricKey}
    initialTwin: {tags: {literal: "$${DPSD_PGPASSWORD}", other: "$${HOME}", mixed: "a-$${DPSD_SITE}-${DPSD_SITE}", plain: "$5 {x}"}}
`), vars)
	if err != nil {
		t.Fatal(err)
	}
	it := m.Items[0]
	tags := it.Body["initialTwin"].(Object)["tags"].(Object)
	for k, want := range map[string]string{"literal": "${DPSD_PGPASSWORD}", "other": "${HOME}", "mixed": "a-${DPSD_SITE}-berlin", "plain": "$5 {x}"} {
		if tags[k] != want {
			t.Errorf("tags.%s = %q, want %q", k, tags[k], want)
		}
	}
	if it.secret["initialTwin.tags.literal"] || it.secret["initialTwin.tags.other"] || !it.secret["initialTwin.tags.mixed"] {
		t.Errorf("secret paths: %v", it.secret)
	}

	lines := `{"kind":"enrollment","registrationId":"dev-1","attestation":{"type":"symmetricKey"},"initialTwin":{"tags":{"pw":"${DPSD_PGPASSWORD}","home":"${HOME}","esc":"$${DPSD_SITE}"}}}
{"kind":"hubDevice","hub":"localhost","deviceId":"s-1","twin":{"properties":{"desired":{"pw":"${DPSD_PGPASSWORD}"}}}}
`
	m, err = Parse("export.jsonl", []byte(lines), vars)
	if err != nil {
		t.Fatalf("an export with ${…} in its values: %v", err)
	}
	tags = m.Items[0].Body["initialTwin"].(Object)["tags"].(Object)
	for k, want := range map[string]string{"pw": "${DPSD_PGPASSWORD}", "home": "${HOME}", "esc": "$${DPSD_SITE}"} {
		if tags[k] != want {
			t.Errorf("export: tags.%s = %q, want %q", k, tags[k], want)
		}
	}
	if pw := m.Items[1].Twin["properties"].(Object)["desired"].(Object)["pw"]; pw != "${DPSD_PGPASSWORD}" {
		t.Errorf("export: the hub device's twin: %q", pw)
	}
}
