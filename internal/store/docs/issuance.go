package docs

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/opendps/dps"
)

// The columns of certificate issuance's tables (issuing_cas,
// credential_policies, issued_certificates) that both stores encode the
// same way. Those tables hold typed columns, not documents.

// EncodeChain is an issuing CA's chain column: a JSON array of base64 DER
// certificates.
func EncodeChain(chain [][]byte) (string, error) {
	b, err := json.Marshal(chain)
	return string(b), err
}

// DecodeChain reads a chain column.
func DecodeChain(s string) ([][]byte, error) {
	var chain [][]byte
	if err := json.Unmarshal([]byte(s), &chain); err != nil {
		return nil, fmt.Errorf("issuing CA chain: %w", err)
	}
	return chain, nil
}

// EncodeKeyTypes is a credential policy's key types column: the names,
// comma-separated ("" for every type).
func EncodeKeyTypes(ks []dps.KeyType) string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = string(k)
	}
	return strings.Join(out, ",")
}

// DecodeKeyTypes reads a key types column.
func DecodeKeyTypes(s string) []dps.KeyType {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	out := make([]dps.KeyType, len(parts))
	for i, p := range parts {
		out[i] = dps.KeyType(p)
	}
	return out
}

// CAInUse is the refusal to delete an issuing CA that a credential policy
// names.
func CAInUse(ca, policy string) error {
	return &dps.Error{Kind: dps.KindConflict, Code: dps.CodeConflict,
		Message: fmt.Sprintf("issuing CA %q is used by credential policy %q; delete the policy first", ca, policy)}
}
