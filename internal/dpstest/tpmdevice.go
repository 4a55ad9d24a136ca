//go:build tpmsimulator

package dpstest

import (
	"encoding/base64"
	"encoding/binary"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"
)

// TPMDevice plays a TPM device: a software TPM (the Microsoft reference
// simulator through go-tpm-tools) with the EK and SRK templates of the Azure
// SDKs. It imports activation blobs and signs SAS tokens inside the TPM.
type TPMDevice struct {
	tpm       transport.TPMCloser
	ek, srk   tpm2.NamedHandle
	EK, SRK   []byte // TPM2B_PUBLIC
	key       *tpm2.NamedHandle
	keyPublic tpm2.TPM2BPublic
}

// NewTPMDevice starts a simulator and creates the EK and SRK.
func NewTPMDevice(tb testing.TB) *TPMDevice {
	tb.Helper()
	t, err := simulator.OpenSimulator()
	if err != nil {
		tb.Fatalf("TPM simulator: %v", err)
	}
	tb.Cleanup(func() { t.Close() })
	d := &TPMDevice{tpm: t}
	ek, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.RSAEKTemplate)}.Execute(t)
	if err != nil {
		tb.Fatalf("create EK: %v", err)
	}
	srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.RSASRKTemplate)}.Execute(t)
	if err != nil {
		tb.Fatalf("create SRK: %v", err)
	}
	d.ek = tpm2.NamedHandle{Handle: ek.ObjectHandle, Name: ek.Name}
	d.srk = tpm2.NamedHandle{Handle: srk.ObjectHandle, Name: srk.Name}
	d.EK, d.SRK = tpm2.Marshal(ek.OutPublic), tpm2.Marshal(srk.OutPublic)
	return d
}

// EKBase64 is the EK as devices send it.
func (d *TPMDevice) EKBase64() string { return base64.StdEncoding.EncodeToString(d.EK) }

// SRKBase64 is the SRK as devices send it.
func (d *TPMDevice) SRKBase64() string { return base64.StdEncoding.EncodeToString(d.SRK) }

func parts(blob []byte) ([6][]byte, error) {
	var out [6][]byte
	for i := range out {
		n := int(binary.BigEndian.Uint16(blob))
		out[i], blob = blob[2:2+n], blob[2+n:]
	}
	return out, nil
}

// Import runs the device sequence on a base64 activation blob:
// ActivateCredential(SRK, EK under PolicySecret(endorsement)), Import under
// the SRK with the AES-128-CFB inner wrapper, Load. The loaded key replaces
// any earlier one.
func (d *TPMDevice) Import(authenticationKey string) error {
	blob, err := base64.StdEncoding.DecodeString(authenticationKey)
	if err != nil {
		return err
	}
	p, err := parts(blob)
	if err != nil {
		return err
	}
	ac, err := tpm2.ActivateCredential{
		ActivateHandle: d.srk,
		KeyHandle: tpm2.AuthHandle{Handle: d.ek.Handle, Name: d.ek.Name, Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(t transport.TPM, h tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
			_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: h, NonceTPM: nonce}.Execute(t)
			return err
		})},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: p[0]},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: p[1]},
	}.Execute(d.tpm)
	if err != nil {
		return err
	}
	pub := tpm2.BytesAs2B[tpm2.TPMTPublic](p[4])
	imp, err := tpm2.Import{
		ParentHandle:  d.srk,
		EncryptionKey: tpm2.TPM2BData{Buffer: ac.CertInfo.Buffer},
		ObjectPublic:  pub,
		Duplicate:     tpm2.TPM2BPrivate{Buffer: p[2]},
		InSymSeed:     tpm2.TPM2BEncryptedSecret{Buffer: p[3]},
		Symmetric: tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgAES, KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
			Mode: tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB)},
	}.Execute(d.tpm)
	if err != nil {
		return err
	}
	if d.key != nil { // the new key replaces the old one
		tpm2.FlushContext{FlushHandle: d.key.Handle}.Execute(d.tpm)
		d.key = nil
	}
	loaded, err := tpm2.Load{ParentHandle: d.srk, InPrivate: imp.OutPrivate, InPublic: pub}.Execute(d.tpm)
	if err != nil {
		return err
	}
	d.key = &tpm2.NamedHandle{Handle: loaded.ObjectHandle, Name: loaded.Name}
	d.keyPublic = pub
	return nil
}

// HMAC computes TPM2_HMAC(SHA-256) with the imported key, inside the TPM.
func (d *TPMDevice) HMAC(data []byte) ([]byte, error) {
	rsp, err := tpm2.Hmac{Handle: tpm2.AuthHandle{Handle: d.key.Handle, Name: d.key.Name, Auth: tpm2.PasswordAuth(nil)},
		Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, HashAlg: tpm2.TPMAlgSHA256}.Execute(d.tpm)
	if err != nil {
		return nil, err
	}
	return rsp.OutHMAC.Buffer, nil
}

// SAS signs a device SAS token with the imported key, as the Azure SDKs do
// for TPM devices (sr upper-case percent-encoded, skn=registration).
func (d *TPMDevice) SAS(scope, regID string, expiry time.Time) (string, error) {
	sr := url.QueryEscape(scope + "/registrations/" + regID)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig, err := d.HMAC([]byte(sr + "\n" + se))
	if err != nil {
		return "", err
	}
	return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig)) + "&se=" + se + "&skn=registration", nil
}
