// Package sas parses, signs and verifies Shared Access Signature tokens as
// Azure DPS devices and service clients send them.
//
// The signature is computed over the sr value exactly as received: clients
// send it raw, with %2F or with %2f, and each variant signs different bytes.
// This package imports only the standard library.
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every SAS token.
const Prefix = "SharedAccessSignature "

// Errors returned by Parse and Verify.
var (
	ErrMalformed = errors.New("sas: malformed token")
	ErrExpired   = errors.New("sas: token expired")
	ErrSignature = errors.New("sas: signature mismatch")
	ErrResource  = errors.New("sas: token resource does not match")
	ErrNoToken   = errors.New("sas: no token presented")
	ErrKeyName   = errors.New("sas: unexpected key name")
)

// Token is a parsed SAS token.
type Token struct {
	// RawResource is the sr value as received; the signature covers these bytes.
	RawResource string
	// Resource is RawResource percent-decoded.
	Resource string
	// RawExpiry is the se value as received; the signature covers these bytes.
	RawExpiry string
	// Expiry is se as Unix seconds.
	Expiry int64
	// Signature is the decoded HMAC.
	Signature []byte
	// KeyName is skn ("" when absent).
	KeyName string
}

// Parse parses a token of the form
// "SharedAccessSignature sr=…&sig=…&se=…[&skn=…]" with keys in any order.
func Parse(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return Token{}, ErrMalformed
	}
	var t Token
	var haveSR, haveSig, haveSE bool
	for rest != "" {
		var kv string
		kv, rest, _ = strings.Cut(rest, "&")
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return Token{}, ErrMalformed
		}
		switch k {
		case "sr":
			if haveSR {
				return Token{}, ErrMalformed
			}
			haveSR = true
			t.RawResource = v
			r, err := url.PathUnescape(v)
			if err != nil {
				return Token{}, ErrMalformed
			}
			t.Resource = r
		case "sig":
			if haveSig {
				return Token{}, ErrMalformed
			}
			haveSig = true
			raw, err := url.PathUnescape(v)
			if err != nil {
				return Token{}, ErrMalformed
			}
			sig, err := base64.StdEncoding.DecodeString(raw)
			if err != nil || len(sig) == 0 {
				return Token{}, ErrMalformed
			}
			t.Signature = sig
		case "se":
			if haveSE {
				return Token{}, ErrMalformed
			}
			haveSE = true
			t.RawExpiry = v
			dec, err := url.PathUnescape(v)
			if err != nil {
				return Token{}, ErrMalformed
			}
			n, err := strconv.ParseInt(dec, 10, 64)
			if err != nil || n < 0 {
				return Token{}, ErrMalformed
			}
			t.Expiry = n
		case "skn":
			dec, err := url.PathUnescape(v)
			if err != nil {
				return Token{}, ErrMalformed
			}
			t.KeyName = dec
		default:
			// Unknown members are ignored, as Azure does.
		}
	}
	if !haveSR || !haveSig || !haveSE || t.Resource == "" {
		return Token{}, ErrMalformed
	}
	return t, nil
}

// String renders the token with its members as received.
func (t Token) String() string {
	var b strings.Builder
	b.WriteString(Prefix)
	b.WriteString("sr=")
	b.WriteString(t.RawResource)
	b.WriteString("&sig=")
	b.WriteString(url.QueryEscape(base64.StdEncoding.EncodeToString(t.Signature)))
	b.WriteString("&se=")
	b.WriteString(t.RawExpiry)
	if t.KeyName != "" {
		b.WriteString("&skn=")
		b.WriteString(strings.ReplaceAll(url.QueryEscape(t.KeyName), "+", "%20"))
	}
	return b.String()
}

// Sign returns HMAC-SHA256(key, rawResource + "\n" + rawExpiry).
func Sign(key []byte, rawResource, rawExpiry string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(rawResource))
	m.Write([]byte{'\n'})
	m.Write([]byte(rawExpiry))
	return m.Sum(nil)
}

// Valid reports whether t is signed with key, in constant time.
func (t Token) Valid(key []byte) bool {
	return hmac.Equal(Sign(key, t.RawResource, t.RawExpiry), t.Signature)
}

// CheckExpiry returns ErrExpired when the token expired more than skew before now.
func (t Token) CheckExpiry(now time.Time, skew time.Duration) error {
	if t.Expiry+int64(skew/time.Second) < now.Unix() {
		return ErrExpired
	}
	return nil
}

// ParseRegistration parses a device's DPS token and checks everything but
// its signature: the resource is scope/registrations/regID (in any case),
// it has not expired more than skew before now, and the key name is
// absent or "registration".
func ParseRegistration(raw, scope, regID string, now time.Time, skew time.Duration) (Token, error) {
	if raw == "" {
		return Token{}, ErrNoToken
	}
	tok, err := Parse(raw)
	if err != nil {
		return Token{}, err
	}
	if !strings.EqualFold(tok.Resource, scope+"/registrations/"+regID) {
		return Token{}, ErrResource
	}
	if err := tok.CheckExpiry(now, skew); err != nil {
		return Token{}, err
	}
	if tok.KeyName != "" && !strings.EqualFold(tok.KeyName, "registration") {
		return Token{}, ErrKeyName
	}
	return tok, nil
}

// New builds a token for resource that expires at expiry, signed with key
// (raw bytes). The resource is URL-encoded as the C# and Python SDKs do
// (upper-case %2F). keyName may be empty.
func New(resource string, key []byte, keyName string, expiry time.Time) string {
	sr := url.QueryEscape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := base64.StdEncoding.EncodeToString(Sign(key, sr, se))
	s := Prefix + "sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se
	if keyName != "" {
		s += "&skn=" + url.QueryEscape(keyName)
	}
	return s
}

// DeriveKey returns the device key of registrationID in a symmetric-key
// enrollment group: HMAC-SHA256(groupKey, registrationID).
func DeriveKey(groupKey []byte, registrationID string) []byte {
	m := hmac.New(sha256.New, groupKey)
	m.Write([]byte(registrationID))
	return m.Sum(nil)
}

// DecodeKey decodes a base64 key.
func DecodeKey(k string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		return nil, err
	}
	return b, nil
}
