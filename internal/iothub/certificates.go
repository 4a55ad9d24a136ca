package iothub

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"

	"github.com/opendps/dps"
)

// Certificates are the identities of authentication type
// certificateAuthority: the operational certificates dps issued them
// (internal/issuance). A device connects with any certificate issued to
// it, that is not revoked; it renews it over MQTT
// ($iothub/credentials/POST/issueCertificate); disabling or deleting the
// identity revokes its certificates.
type Certificates interface {
	// Verify checks a client certificate against the device it was
	// issued to and returns its serial number; a refusal is a *dps.Error
	// of KindUnauthorized.
	Verify(ctx context.Context, hub, deviceID string, leaf *x509.Certificate) (string, error)
	// Renew issues a new certificate for csr (base64 DER) to a device
	// connected with the certificate serial, and returns its chain (DER,
	// leaf first); a refusal is a *dps.Error of KindInvalid.
	Renew(ctx context.Context, hub, deviceID, serial, csr string) ([][]byte, error)
	// Revoke revokes the device's valid certificates.
	Revoke(ctx context.Context, hub, deviceID string) (int, error)
}

// IssueCertificateRequest is the body of a renewal:
// {"id":"{deviceId}","csr":"{base64 DER}","replace":"…"} (replace, which
// the embedded C SDK may send, is accepted and ignored: earlier
// certificates stay valid until they expire or the identity is disabled).
type IssueCertificateRequest struct {
	ID      string `json:"id"`
	CSR     string `json:"csr"`
	Replace string `json:"replace,omitempty"`
}

// IssueCertificate renews the operational certificate of a connected
// device: body is the request, and the answer its new chain (base64 DER,
// leaf first), what the 200 on $iothub/credentials/res carries as
// "certificates".
//
// Errors: KindInvalid with dps.CodeCredentialOperationFailed for a body
// that is not a request for this device, a device that did not connect
// with a certificate dps issued, or a CSR its policy refuses; anything
// else is the store's failure.
func (s *Service) IssueCertificate(ctx context.Context, id Identity, body []byte) ([]string, error) {
	refuse := func(msg string) error {
		return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeCredentialOperationFailed, Message: msg}
	}
	if s.o.Certificates == nil {
		return nil, refuse("certificate issuance is not enabled on this hub")
	}
	var req IssueCertificateRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, refuse("the request is not a JSON object {id, csr}")
	}
	if req.ID != "" && req.ID != id.DeviceID {
		return nil, refuse("the request's id is not the connected device's")
	}
	if req.CSR == "" {
		return nil, refuse("the request has no csr")
	}
	chain, err := s.o.Certificates.Renew(ctx, id.Hub, id.DeviceID, id.CertificateSerial, req.CSR)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(chain))
	for i, c := range chain {
		out[i] = base64.StdEncoding.EncodeToString(c)
	}
	return out, nil
}

// verifyIssued checks the client certificate of a certificateAuthority
// identity and returns its serial number.
func (s *Service) verifyIssued(ctx context.Context, d dps.HubDevice, leaf *x509.Certificate) (string, error) {
	if s.o.Certificates == nil {
		return "", dps.Unauthenticated(errors.New("the device authenticates with a certificate authority, and this hub has no certificate issuance"))
	}
	if err := s.certificateTime(leaf, s.o.Now()); err != nil {
		return "", dps.Unauthenticated(err)
	}
	return s.o.Certificates.Verify(ctx, d.Hub, d.DeviceID, leaf)
}

// revokeIssued revokes the certificates of an identity that was disabled
// or deleted. The identity refuses them already; a failure only leaves
// them out of the CRL, and is logged.
func (s *Service) revokeIssued(ctx context.Context, hub, deviceID string) {
	if s.o.Certificates == nil {
		return
	}
	if _, err := s.o.Certificates.Revoke(ctx, hub, deviceID); err != nil {
		s.o.Logger.ErrorContext(ctx, "the certificates of a disabled or deleted device could not be revoked", "hub", hub, "device_id", deviceID, "error", err)
	}
}
