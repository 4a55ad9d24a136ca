package manifest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/opendps/dps/internal/dpstest"
)

func obj(t *testing.T, s string) Object {
	t.Helper()
	o, err := toObject([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// service is an enrollment as the service answers it: defaults filled
// in, read-only members, keys fetched through attestationmechanism.
const service = `{"registrationId":"dev-1","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"K1","secondaryKey":"K2"}},
 "capabilities":{"iotEdge":false},"etag":"\"e1\"","provisioningStatus":"enabled",
 "reprovisionPolicy":{"updateHubAssignment":true,"migrateDeviceData":true},"createdDateTimeUtc":"2026-01-01T00:00:00Z",
 "lastUpdatedDateTimeUtc":"2026-01-01T00:00:00Z","allocationPolicy":"geoLatency","iotHubs":["a.example.net"],
 "initialTwin":{"tags":{"site":"berlin","floor":2}},
 "customAllocationDefinition":{"webhookUrl":"https://fn.example.net/api/x?code=SECRET","apiVersion":"2021-10-01"},
 "registrationState":{"status":"assigned"}}`

func TestDiffUnchanged(t *testing.T) {
	tests := map[string]string{
		"only the ID and attestation": `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"}}`,
		"defaults written out":        `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"capabilities":{"iotEdge":false},"reprovisionPolicy":{"updateHubAssignment":true}}`,
		"the same keys":               `{"registrationId":"dev-1","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"K1"},"x509":null,"tpm":null}}`,
		"case of enumerations":        `{"registrationId":"dev-1","attestation":{"type":"SymmetricKey"},"provisioningStatus":"Enabled","allocationPolicy":"geolatency"}`,
		"read-only members differ":    `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"etag":"old","createdDateTimeUtc":"x","registrationState":{"status":"failed"}}`,
		"the same initial twin":       `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"initialTwin":{"tags":{"floor":2,"site":"berlin"},"properties":{"desired":{}}}}`,
		"write-only secret":           `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"customAllocationDefinition":{"webhookUrl":"https://fn.example.net/api/x?code=SECRET","signingSecret":"s"}}`,
		"empty equals absent":         `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"deviceId":"","optionalDeviceInformation":{}}`,
		"false equals absent":         `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"newFlag":false,"optionalDeviceInformation":{"b":false}}`,
	}
	have := obj(t, service)
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			if d := Diff(Enrollment, obj(t, want), have, nil); len(d) != 0 {
				t.Errorf("changes: %v", d)
			}
		})
	}
}

func TestDiffChanged(t *testing.T) {
	have := obj(t, service)
	tests := []struct {
		name, want string
		paths      []string
		text       []string // in the printed changes
		hidden     []string // never in them
	}{
		{"status", `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"provisioningStatus":"disabled"}`,
			[]string{"provisioningStatus"}, []string{`provisioningStatus: "enabled" → "disabled"`}, nil},
		{"key", `{"registrationId":"dev-1","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"NEWKEY"}}}`,
			[]string{"attestation.symmetricKey.primaryKey"}, []string{"attestation.symmetricKey.primaryKey: (changed)"}, []string{"NEWKEY", "K1"}},
		{"hubs are a list", `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"iotHubs":["a.example.net","b.example.net"]}`,
			[]string{"iotHubs"}, []string{`["a.example.net"] → ["a.example.net","b.example.net"]`}, nil},
		{"the initial twin is compared whole", `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"initialTwin":{"tags":{"site":"berlin"}}}`,
			[]string{"initialTwin"}, nil, nil},
		{"attestation type", `{"registrationId":"dev-1","attestation":{"type":"tpm","tpm":{"endorsementKey":"EK"}}}`,
			[]string{"attestation.tpm.endorsementKey", "attestation.type"}, nil, nil},
		{"webhook URL", `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"customAllocationDefinition":{"webhookUrl":"https://fn.example.net/api/y?code=OTHER"}}`,
			[]string{"customAllocationDefinition.webhookUrl"}, []string{"https://fn.example.net/api/x?****"}, []string{"SECRET", "OTHER"}},
		{"unknown member", `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"credentialPolicyName":"p1"}`,
			[]string{"credentialPolicyName"}, []string{`(none) → "p1"`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Diff(Enrollment, obj(t, tt.want), have, nil)
			var paths, text []string
			for _, c := range d {
				paths = append(paths, c.Path)
				text = append(text, c.String())
			}
			if strings.Join(paths, ",") != strings.Join(tt.paths, ",") {
				t.Errorf("paths %v, want %v", paths, tt.paths)
			}
			all := strings.Join(text, "\n")
			for _, s := range tt.text {
				if !strings.Contains(all, s) {
					t.Errorf("%q not in\n%s", s, all)
				}
			}
			for _, s := range tt.hidden {
				if strings.Contains(all, s) {
					t.Errorf("%q printed:\n%s", s, all)
				}
			}
		})
	}
}

// TestDiffEnvironmentValuesSecret: a value from the environment is
// printed as (changed) wherever it is.
func TestDiffEnvironmentValuesSecret(t *testing.T) {
	m, err := Parse("m.yaml", []byte(`enrollments: [{registrationId: dev-1, attestation: {type: symmetricKey}, initialTwin: {tags: {token: "${DPSD_TOKEN}"}}}]`),
		env(map[string]string{"DPSD_TOKEN": "hunter2"}))
	if err != nil {
		t.Fatal(err)
	}
	it := m.Items[0]
	d := Diff(Enrollment, it.Body, obj(t, service), it.secret)
	if len(d) != 1 || d[0].String() != "initialTwin: (changed)" {
		t.Errorf("changes: %v", d)
	}
}

func TestDiffHubDeviceAndCertificate(t *testing.T) {
	have := obj(t, `{"deviceId":"s-1","generationId":"g","etag":"e","connectionState":"Connected","status":"enabled","statusReason":null,
	 "lastActivityTime":"2026-01-01T00:00:00Z","cloudToDeviceMessageCount":3,
	 "authentication":{"symmetricKey":{"primaryKey":"P","secondaryKey":"S"},"x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"type":"sas"},
	 "capabilities":{"iotEdge":false}}`)
	if d := Diff(HubDevice, obj(t, `{"deviceId":"s-1","authentication":{"type":"sas","symmetricKey":{"primaryKey":"P"}},"connectionState":"Disconnected","generationId":"other"}`), have, nil); len(d) != 0 {
		t.Errorf("read-only members compared: %v", d)
	}
	d := Diff(HubDevice, obj(t, `{"deviceId":"s-1","status":"disabled","statusReason":"stolen"}`), have, nil)
	if len(d) != 2 || d[0].Path != "status" || d[1].Path != "statusReason" {
		t.Errorf("changes: %v", d)
	}
	body := merge(HubDevice, obj(t, `{"deviceId":"s-1","status":"disabled"}`), have)
	if body["status"] != "disabled" || body["authentication"] == nil || body["etag"] != nil || body["generationId"] != nil || body["deviceId"] != "s-1" {
		t.Errorf("update body: %v", body)
	}

	root := dpstest.NewRoot(t, "Diff Root")
	pem := root.PEM()
	// The same certificate as PEM with other line ends is the same.
	crlf := strings.ReplaceAll(pem, "\n", "\r\n")
	haveCA := Object{"name": "ca", "certificate": pem, "isVerified": true, "etag": "x", "info": Object{"subjectName": "CN=Diff Root"}}
	if d := Diff(Certificate, Object{"name": "ca", "certificate": crlf, "isVerified": false}, haveCA, nil); len(d) != 0 {
		t.Errorf("certificate: %v", d)
	}
	other := dpstest.NewRoot(t, "Other Root").PEM()
	if d := Diff(Certificate, Object{"name": "ca", "certificate": other}, haveCA, nil); len(d) != 1 || d[0].Path != "certificate" {
		t.Errorf("another certificate: %v", d)
	}
}

// TestMergeKeepsTheService: an update sends the service's members the file
// does not give, the file's in place of the service's, the service's keys
// where the file gives none, nothing read-only.
func TestMergeKeepsTheService(t *testing.T) {
	want := obj(t, `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"provisioningStatus":"disabled","newField":1}`)
	body := merge(Enrollment, want, obj(t, service))
	b, _ := json.Marshal(body)
	s := string(b)
	for _, want := range []string{`"provisioningStatus":"disabled"`, `"iotHubs":["a.example.net"]`, `"newField":1`,
		`"attestation":{"symmetricKey":{"primaryKey":"K1","secondaryKey":"K2"},"type":"symmetricKey"}`} {
		if !strings.Contains(s, want) {
			t.Errorf("%s not in %s", want, s)
		}
	}
	for _, no := range []string{"etag", "registrationState", "createdDateTimeUtc"} {
		if strings.Contains(s, no) {
			t.Errorf("%s sent: %s", no, s)
		}
	}
	if _, ok := want["attestation"].(Object)["symmetricKey"]; ok {
		t.Error("merge changed the file's object")
	}
}

// TestMergeKeys: the keys the file leaves out are the service's, the
// file's win, and none are carried to another attestation type.
func TestMergeKeys(t *testing.T) {
	hubDev := obj(t, `{"deviceId":"s-1","status":"enabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"P","secondaryKey":"S"}}}`)
	tests := []struct {
		name      string
		kind      Kind
		want      string
		have      Object
		path      string
		wantValue string
	}{
		{"enrollment, no keys", Enrollment, `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"}}`, obj(t, service), "attestation", `{"symmetricKey":{"primaryKey":"K1","secondaryKey":"K2"},"type":"symmetricKey"}`},
		{"enrollment, the primary key", Enrollment, `{"registrationId":"dev-1","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"NEW"}}}`, obj(t, service), "attestation", `{"symmetricKey":{"primaryKey":"NEW","secondaryKey":"K2"},"type":"symmetricKey"}`},
		{"enrollment to x509", Enrollment, `{"registrationId":"dev-1","attestation":{"type":"x509","x509":{"caReferences":{"primary":"ca"}}}}`, obj(t, service), "attestation", `{"type":"x509","x509":{"caReferences":{"primary":"ca"}}}`},
		{"hub device, sas", HubDevice, `{"deviceId":"s-1","status":"disabled","authentication":{"type":"sas"}}`, hubDev, "authentication", `{"symmetricKey":{"primaryKey":"P","secondaryKey":"S"},"type":"sas"}`},
		{"hub device, no type", HubDevice, `{"deviceId":"s-1","authentication":{"symmetricKey":{"secondaryKey":"NEW"}}}`, hubDev, "authentication", `{"symmetricKey":{"primaryKey":"P","secondaryKey":"NEW"}}`},
		{"hub device to selfSigned", HubDevice, `{"deviceId":"s-1","authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"AB"}}}`, hubDev, "authentication", `{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"AB"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := json.Marshal(merge(tt.kind, obj(t, tt.want), tt.have)[tt.path])
			if string(b) != tt.wantValue {
				t.Errorf("%s: %s, want %s", tt.path, b, tt.wantValue)
			}
		})
	}
}
