// Package wire holds the JSON shapes of the DPS device API, their
// conversions from domain values, and the one table that maps a dps.Kind to
// the DPS status and error code both HTTPS and MQTT report.
package wire

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/opendps/dps"
)

// TimeFormat is how DPS writes timestamps: UTC with 7 fractional digits.
const TimeFormat = "2006-01-02T15:04:05.0000000Z"

// Time formats t as DPS does; the zero time is "".
func Time(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(TimeFormat)
}

// DeviceRegistration is the body of a register request.
type DeviceRegistration struct {
	RegistrationID string          `json:"registrationId,omitempty"`
	TPM            *TPMAttestation `json:"tpm,omitempty"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	CSR            string          `json:"csr,omitempty"`
}

// TPMAttestation is the tpm member of a register request.
type TPMAttestation struct {
	EndorsementKey string `json:"endorsementKey"`
	StorageRootKey string `json:"storageRootKey,omitempty"`
}

// RegistrationOperationStatus is the answer to register and poll requests.
type RegistrationOperationStatus struct {
	OperationID       string                    `json:"operationId"`
	Status            dps.Status                `json:"status"`
	RegistrationState *DeviceRegistrationResult `json:"registrationState,omitempty"`
}

// DeviceRegistrationResult is a registration state as the device API reports it.
type DeviceRegistrationResult struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUtc     string          `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string          `json:"assignedHub,omitempty"`
	DeviceID               string          `json:"deviceId,omitempty"`
	Status                 dps.Status      `json:"status"`
	Substatus              dps.Substatus   `json:"substatus,omitempty"`
	ErrorCode              int             `json:"errorCode,omitempty"`
	ErrorMessage           string          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUtc string          `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string          `json:"etag,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
	SymmetricKey           *SymmetricKey   `json:"symmetricKey,omitempty"`
	X509                   *X509Result     `json:"x509,omitempty"`
	TPM                    *TPMResult      `json:"tpm,omitempty"`
	// IssuedCertificateChain is the operational certificate issued for the
	// register request's csr: base64 DER, leaf first, ending with the root.
	IssuedCertificateChain []string `json:"issuedCertificateChain,omitempty"`
}

// TPMResult carries a TPM device's hub key, wrapped for its TPM.
type TPMResult struct {
	AuthenticationKey string `json:"authenticationKey"`
}

// TPMChallenge is the 401 body that challenges a TPM device.
type TPMChallenge struct {
	Message           string `json:"message"`
	AuthenticationKey string `json:"authenticationKey"`
	KeyName           string `json:"keyName"`
}

// X509Result describes how an X.509 device authenticated. When a
// certificate info is present all of its members are (Java requires it).
type X509Result struct {
	CertificateInfo        *X509CertificateInfo `json:"certificateInfo,omitempty"`
	EnrollmentGroupID      string               `json:"enrollmentGroupId,omitempty"`
	SigningCertificateInfo *X509CertificateInfo `json:"signingCertificateInfo,omitempty"`
}

// FromCertificateInfo converts a domain certificate description.
func FromCertificateInfo(c dps.CertificateInfo) *X509CertificateInfo {
	return &X509CertificateInfo{
		SubjectName:      c.SubjectName,
		SHA1Thumbprint:   c.SHA1Thumbprint,
		SHA256Thumbprint: c.SHA256Thumbprint,
		IssuerName:       c.IssuerName,
		NotBeforeUtc:     c.NotBefore.UTC().Format("2006-01-02T15:04:05Z"),
		NotAfterUtc:      c.NotAfter.UTC().Format("2006-01-02T15:04:05Z"),
		SerialNumber:     c.SerialNumber,
		Version:          c.Version,
	}
}

// SymmetricKey names the group a symmetric-key device matched.
type SymmetricKey struct {
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
}

// FromOperation converts an operation to its wire shape. The register
// answer (register=true) is {operationId, status:"assigning"} even when the
// operation already finished (some clients accept only that on register;
// the first poll reports the result), except for a disabled enrollment.
// Every poll answer also carries registrationState with registrationId and
// status.
func FromOperation(op dps.Operation, register bool) RegistrationOperationStatus {
	out := RegistrationOperationStatus{OperationID: op.ID, Status: op.Status}
	if register && op.Status != dps.StatusDisabled {
		out.Status = dps.StatusAssigning
		return out
	}
	if op.Result == nil || !op.Status.Final() {
		out.Status = dps.StatusAssigning
		out.RegistrationState = &DeviceRegistrationResult{RegistrationID: op.RegistrationID, Status: dps.StatusAssigning}
		return out
	}
	out.RegistrationState = FromRegistration(*op.Result)
	return out
}

// FromOperationFor is FromOperation for a request of apiVersion: an
// assigned operation that issued a certificate carries its chain as
// registrationState.issuedCertificateChain, for the api-versions that have
// it (dps.IssuesCertificates).
func FromOperationFor(op dps.Operation, register bool, apiVersion string) RegistrationOperationStatus {
	out := FromOperation(op, register)
	if rs := out.RegistrationState; rs != nil && rs.Status == dps.StatusAssigned && len(op.IssuedChain) > 0 && dps.IssuesCertificates(apiVersion) {
		rs.IssuedCertificateChain = make([]string, len(op.IssuedChain))
		for i, c := range op.IssuedChain {
			rs.IssuedCertificateChain[i] = base64.StdEncoding.EncodeToString(c)
		}
	}
	return out
}

// CheckCSRVersion refuses a register request's csr sent with an
// api-version that has none (before 2025-07-01-preview): the member would
// otherwise be ignored and the device assigned without the certificate it
// asked for.
func CheckCSRVersion(apiVersion, csr string) error {
	if csr == "" || dps.IssuesCertificates(apiVersion) {
		return nil
	}
	v := apiVersion
	if v == "" {
		v = "none"
	}
	return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeIssuanceNotEnabled,
		Message: "csr needs api-version " + dps.CSRAPIVersion + "-preview or later (this request has " + v + ")"}
}

// OperationStatus is the DPS status of an operation answer: 202 while the
// operation runs (and for every register answer but a disabled one), 200
// once it is final.
func OperationStatus(op dps.Operation, register bool) int {
	if op.Status == dps.StatusDisabled || op.Status.Final() && !register {
		return http.StatusOK
	}
	return http.StatusAccepted
}

// FromRegistration converts a registration record to the device API shape.
// Hub and device are reported only for an assigned registration; error code
// and message only for a failed one.
func FromRegistration(r dps.Registration) *DeviceRegistrationResult {
	out := &DeviceRegistrationResult{
		RegistrationID:         r.RegistrationID,
		CreatedDateTimeUtc:     Time(r.Created),
		Status:                 r.Status,
		LastUpdatedDateTimeUtc: Time(r.Updated),
		ETag:                   r.ETag,
	}
	switch r.Status {
	case dps.StatusAssigned:
		out.AssignedHub, out.DeviceID, out.Substatus = r.AssignedHub, r.DeviceID, r.Substatus
		out.Payload = r.Payload
	case dps.StatusFailed:
		out.ErrorCode, out.ErrorMessage = r.ErrorCode, r.ErrorMessage
	case dps.StatusDisabled:
		out.CreatedDateTimeUtc, out.ETag = "", ""
	}
	if r.Status != dps.StatusAssigned {
		return out
	}
	switch p := r.Proof; p.Type {
	case dps.AttestationSymmetricKey:
		if r.EnrollmentGroupID != "" {
			out.SymmetricKey = &SymmetricKey{EnrollmentGroupID: r.EnrollmentGroupID}
		}
	case dps.AttestationTPM:
		if p.TPM != nil && p.TPM.AuthenticationKey != "" {
			out.TPM = &TPMResult{AuthenticationKey: p.TPM.AuthenticationKey}
		}
	case dps.AttestationX509:
		if p.X509 != nil {
			x := &X509Result{CertificateInfo: FromCertificateInfo(p.X509.Certificate), EnrollmentGroupID: r.EnrollmentGroupID}
			if p.X509.Signing != nil {
				x.SigningCertificateInfo = FromCertificateInfo(*p.X509.Signing)
			}
			out.X509 = x
		}
	}
	return out
}

// ErrorBody is the DPS error shape (ProvisioningServiceErrorDetails).
type ErrorBody struct {
	ErrorCode    int               `json:"errorCode"`
	TrackingID   string            `json:"trackingId"`
	Message      string            `json:"message"`
	Info         map[string]string `json:"info,omitempty"`
	TimestampUtc string            `json:"timestampUtc"`
}

// statusOf maps each Kind to the DPS status reported in the HTTP status
// line and in the MQTT response topic.
var statusOf = map[dps.Kind]int{
	dps.KindInternal:         http.StatusInternalServerError,
	dps.KindInvalid:          http.StatusBadRequest,
	dps.KindUnauthorized:     http.StatusUnauthorized,
	dps.KindNotFound:         http.StatusNotFound,
	dps.KindConflict:         http.StatusConflict,
	dps.KindPrecondition:     http.StatusPreconditionFailed,
	dps.KindThrottled:        http.StatusTooManyRequests,
	dps.KindUnavailable:      http.StatusServiceUnavailable,
	dps.KindTooLarge:         http.StatusRequestEntityTooLarge,
	dps.KindForbidden:        http.StatusForbidden,
	dps.KindMethodNotAllowed: http.StatusMethodNotAllowed,
	dps.KindTimeout:          http.StatusGatewayTimeout,
}

// codeOf is the default DPS error code of each Kind (dps.Code*); a
// dps.Error with a Code overrides it.
var codeOf = map[dps.Kind]int{
	dps.KindInternal:         dps.CodeInternal,
	dps.KindInvalid:          dps.CodeInvalid,
	dps.KindUnauthorized:     dps.CodeUnauthorized,
	dps.KindNotFound:         dps.CodeNotFound,
	dps.KindConflict:         dps.CodeConflict,
	dps.KindPrecondition:     dps.CodePrecondition,
	dps.KindThrottled:        dps.CodeThrottled,
	dps.KindUnavailable:      dps.CodeUnavailable,
	dps.KindTooLarge:         dps.CodeTooLarge,
	dps.KindForbidden:        dps.CodeForbidden,
	dps.KindMethodNotAllowed: dps.CodeMethodNotAllowed,
	dps.KindTimeout:          dps.CodeTimeout,
}

// Status returns the HTTP status (and MQTT response status) of a Kind.
func Status(k dps.Kind) int {
	if status, ok := statusOf[k]; ok {
		return status
	}
	return http.StatusInternalServerError
}

// Code returns the default DPS error code of a Kind.
func Code(k dps.Kind) int {
	if code, ok := codeOf[k]; ok {
		return code
	}
	return dps.CodeInternal
}

// KindOf rebuilds the Kind of an error answer from its status and DPS
// code, for clients: a catalog code names its Kind; any other code (an
// Azure service may send codes dps does not use) is classified by its
// status, and a status no Kind has is KindInternal.
func KindOf(status, code int) dps.Kind {
	if k, ok := dps.KindOfCode(code); ok && Status(k) == status {
		return k
	}
	for k, s := range statusOf {
		if s == status {
			return k
		}
	}
	return dps.KindInternal
}

// Error converts err to its DPS status and body. Internal errors get a
// generic message; their cause is for the log only.
func Error(err error, trackingID string, now time.Time) (int, ErrorBody) {
	e := dps.AsError(err)
	status := Status(e.Kind)
	code := e.Code
	if code == 0 {
		code = Code(e.Kind)
	}
	msg := e.Message
	if e.Kind == dps.KindInternal {
		msg = "Internal server error."
	}
	return status, ErrorBody{ErrorCode: code, TrackingID: trackingID, Message: msg, TimestampUtc: Time(now)}
}

// NewTrackingID returns a random GUID-shaped tracking ID.
func NewTrackingID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexd = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hexd[c>>4], hexd[c&15])
	}
	return string(out)
}

// ASCII rewrites every non-ASCII character of a JSON document as a \uXXXX
// escape (surrogate pairs above U+FFFF). The JSON value is unchanged. The
// Node SDK's MQTT transport decodes responses as ASCII, which would mangle
// raw UTF-8 (for example in a webhook's payload); escaped JSON survives.
// Non-ASCII bytes can occur only inside JSON strings, so a byte-level
// rewrite is safe; invalid UTF-8 becomes U+FFFD.
func ASCII(b []byte) []byte {
	i := 0
	for i < len(b) && b[i] < utf8.RuneSelf {
		i++
	}
	if i == len(b) {
		return b
	}
	const hexd = "0123456789abcdef"
	out := make([]byte, i, len(b)+16)
	copy(out, b[:i])
	esc := func(r rune) {
		out = append(out, '\\', 'u', hexd[r>>12&15], hexd[r>>8&15], hexd[r>>4&15], hexd[r&15])
	}
	for i < len(b) {
		c := b[i]
		if c < utf8.RuneSelf {
			out = append(out, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		i += n
		if r >= 0x10000 {
			r1, r2 := utf16.EncodeRune(r)
			esc(r1)
			esc(r2)
		} else {
			esc(r)
		}
	}
	return out
}

// Marshal is json.Marshal without HTML escaping: JSON the service returns
// keeps payload characters (& < >) as they were sent.
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
