// Package device is a Go client for devices of dps and Azure: Client
// registers a device with the DPS device API (HTTPS, MQTT or MQTT over
// WebSocket) with a symmetric key (individual, or derived from a group
// key), sends an optional payload, and polls until the registration is
// final; ConnectHub then connects the device to the hub it was assigned
// (dps's built-in hub or Azure IoT Hub) over MQTT, to read its twin, report
// properties, send telemetry and receive desired-property patches,
// direct-method calls and cloud-to-device messages.
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
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
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
func (c *Client) Register(ctx context.Context, registrationID string, cred Credential, payload any) (*Result, error) {
	switch strings.ToLower(c.Transport) {
	case "", "https", "http":
	case "mqtt":
		return c.registerMQTT(ctx, registrationID, cred, payload, false)
	case "mqttws":
		return c.registerMQTT(ctx, registrationID, cred, payload, true)
	default:
		return nil, fmt.Errorf("device: unknown transport %q (https, mqtt or mqttws)", c.Transport)
	}
	res, retry, err := c.Start(ctx, registrationID, cred, payload)
	if err != nil {
		return nil, err
	}
	return c.await(ctx, res, retry, func(opID string) (*Result, time.Duration, error) {
		return c.Poll(ctx, registrationID, opID, cred)
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
func (c *Client) Start(ctx context.Context, registrationID string, cred Credential, payload any) (*Result, time.Duration, error) {
	body := map[string]any{"registrationId": registrationID}
	if payload != nil {
		body["payload"] = payload
	}
	b, err := marshal(body)
	if err != nil {
		return nil, 0, fmt.Errorf("device: encode payload: %w", err)
	}
	return c.do(ctx, http.MethodPut, registrationID, "/register", b, cred)
}

// Poll asks for the status of an operation.
func (c *Client) Poll(ctx context.Context, registrationID, operationID string, cred Credential) (*Result, time.Duration, error) {
	return c.do(ctx, http.MethodGet, registrationID, "/operations/"+url.PathEscape(operationID), nil, cred)
}

func (c *Client) do(ctx context.Context, method, registrationID, suffix string, body []byte, cred Credential) (*Result, time.Duration, error) {
	apiVersion := c.APIVersion
	if apiVersion == "" {
		apiVersion = DefaultAPIVersion
	}
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
