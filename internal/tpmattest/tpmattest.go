// Package tpmattest builds the activation blob of Azure DPS TPM
// attestation: a key K wrapped so that only the TPM holding the device's
// endorsement key (EK) can import it under its storage root key (SRK).
// The device imports K into its TPM and signs SAS tokens with TPM2_HMAC.
//
// The construction (TPM 2.0 Part 1 "Credential Protection" and
// "Duplication", with an AES-128-CFB inner wrapper and a trailing
// TPM2B_DATA) follows the protocol reference §2.4.4, which was checked
// against the Microsoft TPM 2.0 reference simulator.
package tpmattest

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// ParsePublic decodes a TPM2B_PUBLIC (as devices send their EK and SRK).
func ParsePublic(b []byte) (*tpm2.TPMTPublic, error) {
	p, err := tpm2.Unmarshal[tpm2.TPM2BPublic](b)
	if err != nil {
		return nil, fmt.Errorf("tpmattest: not a TPM2B_PUBLIC: %w", err)
	}
	pub, err := p.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpmattest: not a TPM2B_PUBLIC: %w", err)
	}
	if pub.Type != tpm2.TPMAlgRSA {
		return nil, fmt.Errorf("tpmattest: key type %v, want RSA", pub.Type)
	}
	return pub, nil
}

func u16b(b []byte) []byte {
	out := make([]byte, 2, 2+len(b))
	binary.BigEndian.PutUint16(out, uint16(len(b)))
	return append(out, b...)
}

func aesCFB(key, data []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(data))
	cipher.NewCFBEncrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(out, data) //nolint:staticcheck // TPM 2.0 mandates CFB
	return out, nil
}

// ActivationBlob wraps hmacKey (32 bytes) for the TPM holding ek and srk
// (both TPM2B_PUBLIC). uri is carried, encrypted, in the trailing
// TPM2B_DATA (it may be empty; the member is always present).
func ActivationBlob(random io.Reader, ek, srk, hmacKey, uri []byte) ([]byte, error) {
	if random == nil {
		random = rand.Reader
	}
	ekPub, err := ParsePublic(ek)
	if err != nil {
		return nil, fmt.Errorf("endorsement key: %w", err)
	}
	srkPub, err := ParsePublic(srk)
	if err != nil {
		return nil, fmt.Errorf("storage root key: %w", err)
	}

	// The HMAC key object: KEYEDHASH, SHA-256, sign|userWithAuth|noDA, duplicable.
	obf := make([]byte, 32)
	if _, err := io.ReadFull(random, obf); err != nil {
		return nil, err
	}
	uniq := sha256.Sum256(append(append([]byte{}, obf...), hmacKey...))
	idPub := tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgKeyedHash,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{SignEncrypt: true, UserWithAuth: true, NoDA: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme:  tpm2.TPMAlgHMAC,
				Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: uniq[:]}),
	}
	sens2B := u16b(tpm2.Marshal(tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: obf},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: hmacKey}),
	}))
	name, err := tpm2.ObjectName(&idPub)
	if err != nil {
		return nil, err
	}

	// Inner wrapper: AES-128-CFB with a fresh 16-byte credential, IV 0.
	cred := make([]byte, 16)
	if _, err := io.ReadFull(random, cred); err != nil {
		return nil, err
	}
	inner := sha256.Sum256(append(append([]byte{}, sens2B...), name.Buffer...))
	encSens, err := aesCFB(cred, append(u16b(inner[:]), sens2B...))
	if err != nil {
		return nil, err
	}

	// Outer wrapper: a seed encapsulated to the SRK.
	srkKEM, err := tpm2.ImportEncapsulationKey(srkPub)
	if err != nil {
		return nil, fmt.Errorf("storage root key: %w", err)
	}
	seed, encSeed, err := srkKEM.Encapsulate(random, "DUPLICATE")
	if err != nil {
		return nil, err
	}
	dupSens, err := aesCFB(tpm2.KDFa(crypto.SHA256, seed, "STORAGE", name.Buffer, nil, 128), encSens)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, tpm2.KDFa(crypto.SHA256, seed, "INTEGRITY", nil, nil, 256))
	mac.Write(dupSens)
	mac.Write(name.Buffer)
	duplicate := append(u16b(mac.Sum(nil)), dupSens...)

	// The credential, protected to the EK, bound to the SRK's name.
	ekKEM, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		return nil, fmt.Errorf("endorsement key: %w", err)
	}
	srkName, err := tpm2.ObjectName(srkPub)
	if err != nil {
		return nil, err
	}
	idObject, encSecret, err := tpm2.CreateCredential(random, ekKEM, srkName.Buffer, cred)
	if err != nil {
		return nil, err
	}
	encURI, err := aesCFB(cred, uri)
	if err != nil {
		return nil, err
	}
	var blob []byte
	blob = append(blob, u16b(idObject)...)
	blob = append(blob, u16b(encSecret)...)
	blob = append(blob, u16b(duplicate)...)
	blob = append(blob, u16b(encSeed)...)
	blob = append(blob, tpm2.Marshal(tpm2.New2B(idPub))...)
	blob = append(blob, u16b(encURI)...)
	return blob, nil
}

// Parts splits an activation blob into its six TPM2B bodies (without
// their size prefixes): idObject, encSecret, duplicate, encSeed, the
// TPMT_PUBLIC of the key, and the encrypted URI.
func Parts(blob []byte) ([6][]byte, error) {
	var out [6][]byte
	for i := range out {
		if len(blob) < 2 {
			return out, fmt.Errorf("tpmattest: blob truncated at part %d", i+1)
		}
		n := int(binary.BigEndian.Uint16(blob))
		if len(blob) < 2+n {
			return out, fmt.Errorf("tpmattest: blob truncated in part %d", i+1)
		}
		out[i], blob = blob[2:2+n], blob[2+n:]
	}
	if len(blob) != 0 {
		return out, fmt.Errorf("tpmattest: %d bytes after the blob", len(blob))
	}
	return out, nil
}
