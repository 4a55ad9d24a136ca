package iothub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/hubproto"
)

// Authenticate checks a device's credential against its identity on hub:
// a SAS token signed with one of the identity's keys (sas), a TLS client
// certificate whose SHA-256 or SHA-1 thumbprint is one of the identity's
// (selfSigned), or one dps issued to the identity and did not revoke
// (certificateAuthority, Options.Certificates). hub must be a configured hub name (see Hub).
//
// Errors: dps.Unauthenticated (KindUnauthorized) for an unknown device, a
// bad, expired or mis-scoped token, a certificate that does not match, or
// an identity whose authentication the credential cannot satisfy;
// KindForbidden with dps.CodeDeviceDisabled for a disabled device (only
// once the credential is proven: a stranger learns nothing); anything else
// is the store's failure.
func (s *Service) Authenticate(ctx context.Context, hub, deviceID string, cred dps.Credential) (Identity, error) {
	now := s.o.Now()
	d, err := s.o.Store.HubDevice(ctx, hub, deviceID)
	if err != nil {
		if dps.KindOf(err) == dps.KindNotFound {
			return Identity{}, dps.Unauthenticated(errors.New("no such device on this hub"))
		}
		return Identity{}, err
	}
	if d.DeviceID != deviceID {
		// The stores fold IDs; IoT Hub's are case-sensitive.
		return Identity{}, dps.Unauthenticated(errors.New("no such device on this hub"))
	}
	id := Identity{Hub: d.Hub, DeviceID: d.DeviceID, GenerationID: d.GenerationID}
	switch {
	case cred.SAS != "":
		exp, err := s.checkToken(d, cred.SAS, hub, now)
		if err != nil {
			return Identity{}, dps.Unauthenticated(err)
		}
		id.Method, id.Expires = "sas", exp
	case len(cred.Certificates) > 0 && d.Auth.Type == dps.HubAuthCA:
		serial, err := s.verifyIssued(ctx, d, cred.Certificates[0])
		if err != nil {
			return Identity{}, err
		}
		id.Method, id.CertificateSerial = "x509", serial
	case len(cred.Certificates) > 0:
		if err := s.checkCertificate(d, cred.Certificates[0], now); err != nil {
			return Identity{}, dps.Unauthenticated(err)
		}
		id.Method = "x509"
	default:
		return Identity{}, dps.Unauthenticated(errors.New("no SAS token and no client certificate"))
	}
	if !d.Enabled() {
		return Identity{}, &dps.Error{Kind: dps.KindForbidden, Code: dps.CodeDeviceDisabled, Message: "The device is disabled."}
	}
	return id, nil
}

// checkToken verifies a device SAS token against the identity's keys and
// returns its expiry.
func (s *Service) checkToken(d dps.HubDevice, raw, hub string, now time.Time) (time.Time, error) {
	if d.Auth.Type != dps.HubAuthSAS {
		return time.Time{}, errors.New("the device does not authenticate with symmetric keys")
	}
	tok, err := hubproto.ParseDeviceToken(raw, hub, d.DeviceID, now, s.o.Skew)
	if err != nil {
		return time.Time{}, err
	}
	for _, k := range []dps.Key{d.Auth.PrimaryKey, d.Auth.SecondaryKey} {
		if k == "" {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(string(k))
		if err != nil {
			continue
		}
		if tok.Valid(key) {
			return time.Unix(tok.Expiry, 0), nil
		}
	}
	return time.Time{}, errors.New("the SAS token's signature does not match the device's keys")
}

// certificateTime checks a client certificate is valid now (give or take
// the clock skew allowed).
func (s *Service) certificateTime(leaf *x509.Certificate, now time.Time) error {
	if now.Add(s.o.Skew).Before(leaf.NotBefore) || now.Add(-s.o.Skew).After(leaf.NotAfter) {
		return errors.New("the client certificate is not valid at this time")
	}
	return nil
}

// checkCertificate matches a client certificate with a selfSigned
// identity's thumbprints (hex, any case, SHA-256 or SHA-1, as IoT Hub
// compares both). The TLS handshake proved the device holds its key; IoT
// Hub checks no revocation, and neither does this.
func (s *Service) checkCertificate(d dps.HubDevice, leaf *x509.Certificate, now time.Time) error {
	if d.Auth.Type != dps.HubAuthSelfSigned {
		return errors.New("the device does not authenticate with a certificate thumbprint")
	}
	if err := s.certificateTime(leaf, now); err != nil {
		return err
	}
	s256 := sha256.Sum256(leaf.Raw)
	s1 := sha1.Sum(leaf.Raw)
	for _, want := range []string{d.Auth.PrimaryThumbprint, d.Auth.SecondaryThumbprint} {
		if want == "" {
			continue
		}
		if strings.EqualFold(want, hex.EncodeToString(s256[:])) || strings.EqualFold(want, hex.EncodeToString(s1[:])) {
			return nil
		}
	}
	return errors.New("the client certificate's thumbprint does not match the device's")
}
