package dpstest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// SoftwareTPMKeys returns base64 TPM2B_PUBLIC structures of an EK and an SRK
// with the Azure SDKs' templates and fresh RSA-2048 keys, for tests that do
// not need a TPM to use the keys (the server only encrypts to them).
func SoftwareTPMKeys(tb testing.TB) (ek, srk string) {
	tb.Helper()
	mk := func(tmpl tpm2.TPMTPublic) string {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			tb.Fatal(err)
		}
		tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
		return base64.StdEncoding.EncodeToString(tpm2.Marshal(tpm2.New2B(tmpl)))
	}
	return mk(tpm2.RSAEKTemplate), mk(tpm2.RSASRKTemplate)
}
