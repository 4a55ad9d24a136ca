//go:build tpmsimulator

package tpmattest_test

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/tpmattest"
)

// TestBlobImportsIntoTPM builds a blob in software and checks that a
// (simulated) TPM with the SDK templates imports it and that its TPM2_HMAC
// equals the software HMAC with the wrapped key.
func TestBlobImportsIntoTPM(t *testing.T) {
	dev := dpstest.NewTPMDevice(t)
	for i := range 2 { // a second blob replaces the first key
		key := make([]byte, 32)
		rand.Read(key)
		blob, err := tpmattest.ActivationBlob(nil, dev.EK, dev.SRK, key, []byte("0ne00000000/registrations/dev"))
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.Import(base64.StdEncoding.EncodeToString(blob)); err != nil {
			t.Fatalf("blob %d: device import: %v", i, err)
		}
		data := []byte("0ne00000000%2fregistrations%2fmy-tpm-device\n1700000000")
		got, err := dev.HMAC(data)
		if err != nil {
			t.Fatal(err)
		}
		m := hmac.New(sha256.New, key)
		m.Write(data)
		if !hmac.Equal(got, m.Sum(nil)) {
			t.Fatalf("blob %d: TPM HMAC differs from the software HMAC", i)
		}
	}
	// A blob for another TPM's EK does not import.
	blob, err := tpmattest.ActivationBlob(nil, otherEK(t, dev.EK), dev.SRK, make([]byte, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Import(base64.StdEncoding.EncodeToString(blob)); err == nil {
		t.Fatal("a blob for another EK was imported")
	}
}

// otherEK returns ek with another RSA modulus: the EK of a different TPM.
func otherEK(t *testing.T, ek []byte) []byte {
	pub, err := tpmattest.ParsePublic(ek)
	if err != nil {
		t.Fatal(err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
	return tpm2.Marshal(tpm2.New2B(*pub))
}
