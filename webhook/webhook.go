// Package webhook is for authors of custom allocation webhooks, for dps and
// for Azure DPS alike: the request dps sends, the response it expects, an
// http.Handler helper, and verification of the signature dps adds when the
// instance has a signing secret.
//
//	http.Handle("/allocate", webhook.Handler(func(ctx context.Context, req *webhook.Request) (*webhook.Response, error) {
//		return &webhook.Response{IoTHubHostName: req.LinkedHubs[0], Payload: json.RawMessage(`{"hello":"device"}`)}, nil
//	}, webhook.HandlerOptions{}))
//
// The package imports only the standard library.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxBody is the largest request or response body (the DPS message limit).
const MaxBody = 96 * 1024

// Request is what dps POSTs to the webhook (Azure's AllocationRequest).
// Exactly one of IndividualEnrollment and EnrollmentGroup is set; neither
// carries keys or other key material.
type Request struct {
	IndividualEnrollment *Enrollment          `json:"individualEnrollment,omitempty"`
	EnrollmentGroup      *Enrollment          `json:"enrollmentGroup,omitempty"`
	DeviceRuntimeContext DeviceRuntimeContext `json:"deviceRuntimeContext"`
	// LinkedHubs are the hubs the device may be assigned to.
	LinkedHubs []string `json:"linkedHubs"`
}

// Enrollment is the enrollment (or group) the device matched, as the
// service API shows it without secrets. Members a webhook rarely needs are
// kept in Raw.
type Enrollment struct {
	RegistrationID     string          `json:"registrationId,omitempty"`
	EnrollmentGroupID  string          `json:"enrollmentGroupId,omitempty"`
	DeviceID           string          `json:"deviceId,omitempty"`
	Attestation        *Attestation    `json:"attestation,omitempty"`
	Capabilities       *Capabilities   `json:"capabilities,omitempty"`
	InitialTwin        json.RawMessage `json:"initialTwin,omitempty"`
	ETag               string          `json:"etag,omitempty"`
	ProvisioningStatus string          `json:"provisioningStatus,omitempty"`
	AllocationPolicy   string          `json:"allocationPolicy,omitempty"`
	IoTHubs            []string        `json:"iotHubs,omitempty"`
	// Raw is the enrollment exactly as received.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the raw enrollment alongside the typed members.
func (e *Enrollment) UnmarshalJSON(b []byte) error {
	type plain Enrollment
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*e = Enrollment(p)
	e.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// Attestation names the enrollment's attestation type.
type Attestation struct {
	Type string `json:"type"`
}

// Capabilities are the device's capabilities.
type Capabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// DeviceRuntimeContext describes the registering device.
type DeviceRuntimeContext struct {
	RegistrationID string `json:"registrationId"`
	// CurrentIoTHubHostName and CurrentDeviceID are set when an assigned
	// device registers again.
	CurrentIoTHubHostName string `json:"currentIotHubHostName,omitempty"`
	CurrentDeviceID       string `json:"currentDeviceId,omitempty"`
	// One of these names the device's attestation ({} for symmetric keys).
	SymmetricKey *json.RawMessage `json:"symmetricKey,omitempty"`
	X509         *json.RawMessage `json:"x509,omitempty"`
	TPM          *json.RawMessage `json:"tpm,omitempty"`
	// Payload is the JSON the device sent in its register call, as sent.
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Response is what the webhook answers (Azure's AllocationResponse).
type Response struct {
	// IoTHubHostName must be one of Request.LinkedHubs.
	IoTHubHostName string `json:"iotHubHostName"`
	// InitialTwin, when set, overrides the enrollment's initial twin:
	// {"tags":{…},"properties":{"desired":{…}}}.
	InitialTwin *Twin `json:"initialTwin,omitempty"`
	// Payload, when set, is returned to the device verbatim in
	// registrationState.payload.
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Twin is an initial device twin.
type Twin struct {
	Tags       json.RawMessage `json:"tags,omitempty"`
	Properties *TwinProperties `json:"properties,omitempty"`
}

// TwinProperties holds the desired properties.
type TwinProperties struct {
	Desired json.RawMessage `json:"desired,omitempty"`
}

// SignatureHeader carries dps's signature of a webhook request:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>".
const SignatureHeader = "X-Dps-Signature"

// Sign returns the SignatureHeader value for body at time t.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors returned by Verify.
var (
	ErrNoSignature  = errors.New("webhook: request is not signed")
	ErrBadSignature = errors.New("webhook: signature does not match")
	ErrStale        = errors.New("webhook: signature timestamp outside the tolerance")
)

// Verify checks a SignatureHeader value against body: the HMAC must match
// (constant time) and the timestamp must be within tolerance of now.
func Verify(secret, body []byte, header string, tolerance time.Duration, now time.Time) error {
	if header == "" {
		return ErrNoSignature
	}
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrBadSignature
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			ok = true
		}
	}
	if !ok {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(n, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	return nil
}

// HandlerOptions configure Handler.
type HandlerOptions struct {
	// Secret, when set, makes the handler refuse requests without a valid
	// signature (401).
	Secret []byte
	// Tolerance is how old a signature may be (default 5 minutes).
	Tolerance time.Duration
}

// Error lets an allocation function choose the HTTP status of its failure.
// dps maps 401 to error 400209, 429 and 5xx to a retry, anything else to
// 400207.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Handler returns an http.Handler that decodes the request, calls fn and
// encodes its response.
func Handler(fn func(ctx context.Context, req *Request) (*Response, error), o HandlerOptions) http.Handler {
	if o.Tolerance <= 0 {
		o.Tolerance = 5 * time.Minute
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
		if err != nil {
			http.Error(w, "request body too large or unreadable", http.StatusRequestEntityTooLarge)
			return
		}
		if o.Secret != nil {
			if err := Verify(o.Secret, body, r.Header.Get(SignatureHeader), o.Tolerance, time.Now()); err != nil {
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
		}
		var req Request
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, "invalid allocation request: "+err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := fn(r.Context(), &req)
		if err != nil {
			status := http.StatusInternalServerError
			if e, ok := errors.AsType[*Error](err); ok && e.Status != 0 {
				status = e.Status
			}
			http.Error(w, err.Error(), status)
			return
		}
		if resp == nil {
			resp = &Response{}
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // the payload keeps & < > as written
		if err := enc.Encode(resp); err != nil {
			http.Error(w, fmt.Sprintf("encode response: %v", err), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write(b.Bytes())
	})
}
