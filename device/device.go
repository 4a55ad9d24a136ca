// Package device is a Go client for devices of dps and Azure: Client
// registers a device with the DPS device API (HTTPS, MQTT or MQTT over
// WebSocket) with a symmetric key (individual, or derived from a group
// key), sends an optional payload, and polls until the registration is
// final; ConnectHub then connects the device to the hub it was assigned
// (dps's built-in hub or Azure IoT Hub) over MQTT, to read its twin, report
// properties, send telemetry and receive desired-property patches,
// direct-method calls and cloud-to-device messages.
//
// With WithCSR the registration also asks DPS for an operational
// certificate (certificate issuance): the result's chain, with the CSR's
// key (RegistrationState.TLSCertificate), is the device's credential on its
// hub, and Hub.RenewCertificate renews it there.
//
//	c := &device.Client{Endpoint: "https://localhost", IDScope: "0ne00000001"}
//	res, err := c.Register(ctx, "my-device", device.SymmetricKey(key), map[string]any{"model": "t1"})
//	…
//	h, err := device.ConnectHub(ctx, device.HubOptions{Host: res.RegistrationState.AssignedHub,
//		DeviceID: res.RegistrationState.DeviceID, Credential: device.SymmetricKey(key)})
//	twin, err := h.Twin(ctx)
package device

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps/internal/sas"
)

// DefaultAPIVersion is the device api-version the client sends.
const DefaultAPIVersion = "2021-06-01"

// CSRAPIVersion is the api-version sent with a certificate signing request
// (WithCSR) when Client.APIVersion is not set: the stable version with
// csr and issuedCertificateChain.
const CSRAPIVersion = "2026-11-01"

// RegisterOption adds to a register request.
type RegisterOption func(*registerOptions)

type registerOptions struct {
	csr []byte
}

// WithCSR sends a certificate signing request with the registration
// (DER PKCS #10, its subject common name the registration ID; NewCSR
// makes one): DPS issues the device an operational certificate, whose
// chain the result carries (RegistrationState.IssuedCertificateChain,
// IssuedCertificates, TLSCertificate). The hub then authenticates the
// device with it. A DPS that cannot issue one refuses the registration.
func WithCSR(der []byte) RegisterOption { return func(o *registerOptions) { o.csr = der } }

// NewCSR returns a certificate signing request for registrationID (its
// subject common name) signed by key, DER: what WithCSR and Hub.RenewCertificate
// send. Use an ECDSA P-256 or P-384 key, or RSA of 2048 bits or more.
func NewCSR(key crypto.Signer, registrationID string) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: registrationID}}, key)
}

func (c *Client) apiVersion(o registerOptions) string {
	switch {
	case c.APIVersion != "":
		return c.APIVersion
	case o.csr != nil:
		return CSRAPIVersion
	}
	return DefaultAPIVersion
}

// registerBody is the register request's body.
func registerBody(registrationID string, payload any, o registerOptions) ([]byte, error) {
	body := map[string]any{"registrationId": registrationID}
	if payload != nil {
		body["payload"] = payload
	}
	if o.csr != nil {
		body["csr"] = base64.StdEncoding.EncodeToString(o.csr)
	}
	b, err := marshal(body)
	if err != nil {
		return nil, fmt.Errorf("device: encode payload: %w", err)
	}
	return b, nil
}

// Client talks to one DPS endpoint. The zero value of every optional field
// is usable.
type Client struct {
	// Endpoint is the base URL, for example "https://global.azure-devices-provisioning.net".
	Endpoint string
	// IDScope is the instance's ID scope.
	IDScope string
	// HTTPClient sends the requests (default http.DefaultClient).
	HTTPClient *http.Client
	// APIVersion is sent as api-version (default DefaultAPIVersion).
	APIVersion string
	// PollInterval, when set, replaces the server's Retry-After between polls.
	PollInterval time.Duration
	// TokenTTL is the lifetime of the SAS tokens the client signs (default 1h).
	TokenTTL time.Duration
	// Transport is "https" (default), "mqtt", or "mqttws": MQTT over
	// WebSocket on the HTTPS endpoint (wss://host/$iothub/websocket), for
	// networks that pass only 443.
	Transport string
	// MQTTAddress is host:port of the MQTT endpoint (default: the
	// endpoint's host, port 8883).
	MQTTAddress string
	// TLSConfig configures MQTT's TLS, also over WebSocket (trusted roots,
	// client certificate); HTTPS uses HTTPClient.
	TLSConfig *tls.Config
}

// Credential authenticates a device.
type Credential interface {
	// Authorization returns the Authorization header value for resource.
	Authorization(resource string, now time.Time, ttl time.Duration) (string, error)
}

type symmetricKey string

// SymmetricKey returns a credential for a base64 device key.
func SymmetricKey(base64Key string) Credential { return symmetricKey(base64Key) }

func (k symmetricKey) Authorization(resource string, now time.Time, ttl time.Duration) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(string(k))
	if err != nil {
		return "", fmt.Errorf("device: symmetric key is not base64: %w", err)
	}
	return sas.New(resource, raw, "registration", now.Add(ttl)), nil
}

// DeriveKey returns the device key of registrationID in a symmetric-key
// enrollment group whose key is groupKey (both base64).
func DeriveKey(groupKey, registrationID string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(groupKey)
	if err != nil {
		return "", fmt.Errorf("device: group key is not base64: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sas.DeriveKey(raw, registrationID)), nil
}

// Result is a registration operation status.
type Result struct {
	OperationID       string             `json:"operationId"`
	Status            string             `json:"status"`
	RegistrationState *RegistrationState `json:"registrationState,omitempty"`
}

// RegistrationState is the device's registration as DPS reports it.
type RegistrationState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUtc     string          `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string          `json:"assignedHub,omitempty"`
	DeviceID               string          `json:"deviceId,omitempty"`
	Status                 string          `json:"status"`
	Substatus              string          `json:"substatus,omitempty"`
	ErrorCode              int             `json:"errorCode,omitempty"`
	ErrorMessage           string          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUtc string          `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string          `json:"etag,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
	SymmetricKey           *struct {
		EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	} `json:"symmetricKey,omitempty"`
	X509 *struct {
		EnrollmentGroupID      string          `json:"enrollmentGroupId,omitempty"`
		CertificateInfo        json.RawMessage `json:"certificateInfo,omitempty"`
		SigningCertificateInfo json.RawMessage `json:"signingCertificateInfo,omitempty"`
	} `json:"x509,omitempty"`
	// IssuedCertificateChain is the operational certificate DPS issued for
	// the registration's CSR (WithCSR): base64 DER, leaf first, ending
	// with the root.
	IssuedCertificateChain []string `json:"issuedCertificateChain,omitempty"`
}

// IssuedCertificates parses the issued certificate chain, leaf first;
// an error when the registration carries none.
func (s *RegistrationState) IssuedCertificates() ([]*x509.Certificate, error) {
	return parseChain(s.IssuedCertificateChain)
}

// TLSCertificate is the issued certificate with the key of its CSR, to
// present to the hub (Certificate(…) in HubOptions): the leaf and the
// certificates above it but the root.
func (s *RegistrationState) TLSCertificate(key crypto.Signer) (tls.Certificate, error) {
	return tlsCertificate(s.IssuedCertificateChain, key)
}

// IssuedChainPEM is the issued chain as PEM text, leaf first, for a
// device to keep with its key.
func (s *RegistrationState) IssuedChainPEM() ([]byte, error) {
	certs, err := s.IssuedCertificates()
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out, nil
}

// parseChain decodes a chain of base64 DER certificates.
func parseChain(chain []string) ([]*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("device: no issued certificate chain")
	}
	out := make([]*x509.Certificate, len(chain))
	for i, b := range chain {
		der, err := base64.StdEncoding.DecodeString(b)
		if err != nil {
			return nil, fmt.Errorf("device: issued certificate %d is not base64: %w", i, err)
		}
		if out[i], err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("device: issued certificate %d: %w", i, err)
		}
	}
	return out, nil
}

// tlsCertificate is a chain (leaf first) with the leaf's key, the last
// certificate dropped when it is a self-signed root (the peer has it).
func tlsCertificate(chain []string, key crypto.Signer) (tls.Certificate, error) {
	certs, err := parseChain(chain)
	if err != nil {
		return tls.Certificate{}, err
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if e, ok := certs[0].PublicKey.(equaler); !ok || !e.Equal(key.Public()) {
		return tls.Certificate{}, errors.New("device: the issued certificate is not for this key")
	}
	out := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for i, c := range certs {
		if i > 0 && i == len(certs)-1 && bytes.Equal(c.RawIssuer, c.RawSubject) {
			break
		}
		out.Certificate = append(out.Certificate, c.Raw)
	}
	return out, nil
}

// Error is an error answer from DPS.
type Error struct {
	StatusCode int    `json:"-"`
	ErrorCode  int    `json:"errorCode"`
	TrackingID string `json:"trackingId"`
	Message    string `json:"message"`
	Timestamp  string `json:"timestampUtc"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("dps: HTTP %d, error %d: %s (tracking ID %s)", e.StatusCode, e.ErrorCode, e.Message, e.TrackingID)
}

// Register registers the device over the configured transport and polls
// until the operation is final.
// A final status of failed or disabled is returned as a Result, not an
// error; errors are transport failures and DPS error answers (*Error).
// payload is marshalled to JSON (nil: none; json.RawMessage is sent as is).
func (c *Client) Register(ctx context.Context, registrationID string, cred Credential, payload any, opts ...RegisterOption) (*Result, error) {
	var o registerOptions
	for _, opt := range opts {
		opt(&o)
	}
	switch strings.ToLower(c.Transport) {
	case "", "https", "http":
	case "mqtt":
		return c.registerMQTT(ctx, registrationID, cred, payload, o, false)
	case "mqttws":
		return c.registerMQTT(ctx, registrationID, cred, payload, o, true)
	default:
		return nil, fmt.Errorf("device: unknown transport %q (https, mqtt or mqttws)", c.Transport)
	}
	res, retry, err := c.start(ctx, registrationID, cred, payload, o)
	if err != nil {
		return nil, err
	}
	return c.await(ctx, res, retry, func(opID string) (*Result, time.Duration, error) {
		return c.poll(ctx, registrationID, opID, cred, o)
	})
}

// await polls until the operation is final, waiting the server's
// Retry-After (or PollInterval) between polls.
func (c *Client) await(ctx context.Context, res *Result, retry time.Duration, poll func(operationID string) (*Result, time.Duration, error)) (*Result, error) {
	for res.Status == "assigning" || res.Status == "unassigned" {
		wait := retry
		if c.PollInterval > 0 {
			wait = c.PollInterval
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, ctx.Err()
		case <-t.C:
		}
		var err error
		if res, retry, err = poll(res.OperationID); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// Start sends the register request and returns the first answer and the
// server's Retry-After.
func (c *Client) Start(ctx context.Context, registrationID string, cred Credential, payload any, opts ...RegisterOption) (*Result, time.Duration, error) {
	var o registerOptions
	for _, opt := range opts {
		opt(&o)
	}
	return c.start(ctx, registrationID, cred, payload, o)
}

func (c *Client) start(ctx context.Context, registrationID string, cred Credential, payload any, o registerOptions) (*Result, time.Duration, error) {
	b, err := registerBody(registrationID, payload, o)
	if err != nil {
		return nil, 0, err
	}
	return c.do(ctx, http.MethodPut, registrationID, "/register", b, cred, c.apiVersion(o))
}

// Poll asks for the status of an operation (with the api-version of a
// registration sent with the same options).
func (c *Client) Poll(ctx context.Context, registrationID, operationID string, cred Credential, opts ...RegisterOption) (*Result, time.Duration, error) {
	var o registerOptions
	for _, opt := range opts {
		opt(&o)
	}
	return c.poll(ctx, registrationID, operationID, cred, o)
}

func (c *Client) poll(ctx context.Context, registrationID, operationID string, cred Credential, o registerOptions) (*Result, time.Duration, error) {
	return c.do(ctx, http.MethodGet, registrationID, "/operations/"+url.PathEscape(operationID), nil, cred, c.apiVersion(o))
}

func (c *Client) do(ctx context.Context, method, registrationID, suffix string, body []byte, cred Credential, apiVersion string) (*Result, time.Duration, error) {
	ttl := c.TokenTTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	u := strings.TrimSuffix(c.Endpoint, "/") + "/" + url.PathEscape(c.IDScope) + "/registrations/" + url.PathEscape(registrationID) + suffix + "?api-version=" + url.QueryEscape(apiVersion)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	if cred != nil {
		auth, err := cred.Authorization(c.IDScope+"/registrations/"+registrationID, time.Now(), ttl)
		if err != nil {
			return nil, 0, err
		}
		req.Header.Set("Authorization", auth)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, 0, err
	}
	retry := 2 * time.Second
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retry = time.Duration(s) * time.Second
	}
	if resp.StatusCode >= 300 {
		e := &Error{StatusCode: resp.StatusCode}
		if err := json.Unmarshal(data, e); err != nil {
			e.Message = strings.TrimSpace(string(data))
		}
		return nil, retry, e
	}
	var res Result
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, 0, fmt.Errorf("device: decode answer (HTTP %d): %w", resp.StatusCode, err)
	}
	if res.OperationID == "" || res.Status == "" {
		return nil, 0, fmt.Errorf("device: answer lacks operationId or status: %s", data)
	}
	return &res, retry, nil
}

// marshal is json.Marshal without HTML escaping: the payload keeps & < >
// as written.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
