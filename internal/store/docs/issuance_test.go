package docs_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// TestIssuanceMembers pins the storage format of certificate issuance's
// members (they came after the previous format, so no legacy golden
// holds them): an operation's CSR and issued chain, an enrollment's CA and
// policy names; each reads back as written.
func TestIssuanceMembers(t *testing.T) {
	op := dps.Operation{ID: "op", RegistrationID: "dev", Status: dps.StatusAssigning, Payload: json.RawMessage(`null`),
		CSR: []byte("csr"), IssuedChain: [][]byte{[]byte("leaf"), []byte("root")}}
	b, err := docs.EncodeOperation(op)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":1,"id":"op","registrationId":"dev","status":"assigning","payload":null,"csr":"Y3Ny","issuedCertificateChain":["bGVhZg==","cm9vdA=="]}`
	if string(b) != want {
		t.Errorf("operation document\n%s\nwant\n%s", b, want)
	}
	got, err := docs.DecodeOperation(b)
	if err != nil || !reflect.DeepEqual(got, op) {
		t.Errorf("decoded %#v, %v; want %#v", got, err, op)
	}

	g := dps.Group{ID: "g", Settings: dps.Settings{InitialTwin: json.RawMessage(`null`), CertificateAuthorityName: "ca-1", CertificatePolicyName: "policy-1"}}
	b, err = docs.EncodeGroup(g)
	if err != nil {
		t.Fatal(err)
	}
	want = `{"v":1,"id":"g","attestation":{},"initialTwin":null,"certificateAuthorityName":"ca-1","certificatePolicyName":"policy-1"}`
	if string(b) != want {
		t.Errorf("group document\n%s\nwant\n%s", b, want)
	}
	if got, err := docs.DecodeGroup(b); err != nil || !reflect.DeepEqual(got, g) {
		t.Errorf("decoded %#v, %v; want %#v", got, err, g)
	}
}

// TestIssuanceLifted: a document written before issuance was modelled
// keeps the names in its extra members; they read back as the fields, and
// the fields win over them.
func TestIssuanceLifted(t *testing.T) {
	old := `{"v":1,"id":"g","attestation":{},"initialTwin":null,"extra":{"certificateAuthorityName":"ca-1","credentialPolicyName":"p-old","namespaceName":"ns"}}`
	g, err := docs.DecodeGroup([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	if g.CertificateAuthorityName != "ca-1" || g.CertificatePolicyName != "p-old" || len(g.Extra) != 1 || string(g.Extra["namespaceName"]) != `"ns"` {
		t.Errorf("lifted %#v", g.Settings)
	}
	both := `{"v":1,"id":"g","attestation":{},"initialTwin":null,"certificatePolicyName":"p-new","extra":{"credentialPolicyName":"p-old"}}`
	if g, err := docs.DecodeGroup([]byte(both)); err != nil || g.CertificatePolicyName != "p-new" || g.Extra != nil {
		t.Errorf("fields and extra: %#v, %v", g.Settings, err)
	}
}
