// Package client is a Go client for the DPS service (management) API,
// used by dpsctl and end-to-end tests. It authenticates with a shared
// access policy connection string, as the Azure service SDKs do.
package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/wire"
)

// APIVersion is the service api-version the client sends.
const APIVersion = "2021-10-01"

// Client calls one dps (or Azure DPS) service endpoint.
type Client struct {
	// Endpoint is the base URL (default https://HostName).
	Endpoint string
	// HostName is the service host name signed into tokens (sr).
	HostName string
	KeyName  string
	Key      []byte
	HTTP     *http.Client
}

// FromConnectionString parses
// "HostName=…;SharedAccessKeyName=…;SharedAccessKey=…".
func FromConnectionString(cs string) (*Client, error) {
	c := &Client{}
	for _, part := range strings.Split(cs, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch strings.ToLower(k) {
		case "hostname":
			c.HostName = v
		case "sharedaccesskeyname":
			c.KeyName = v
		case "sharedaccesskey":
			key, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return nil, errors.New("client: SharedAccessKey is not base64")
			}
			c.Key = key
		}
	}
	if c.HostName == "" || c.KeyName == "" || c.Key == nil {
		return nil, errors.New("client: connection string needs HostName, SharedAccessKeyName and SharedAccessKey")
	}
	c.Endpoint = "https://" + c.HostName
	return c, nil
}

// Error is an error answer of the service API. It wraps the domain error
// the answer stands for (Unwrap), so callers compare kinds and codes with
// dps.KindOf and errors.AsType[*dps.Error], not message text.
type Error struct {
	StatusCode int
	Body       wire.ErrorBody
}

// Unwrap returns the answer as a *dps.Error: its Kind rebuilt from the
// status and code through the error catalog, the code (the Kind's default
// when the body has none) and the message.
func (e *Error) Unwrap() error {
	k := wire.KindOf(e.StatusCode, e.Body.ErrorCode)
	return &dps.Error{Kind: k, Code: cmp.Or(e.Body.ErrorCode, wire.Code(k)), Message: e.Body.Message}
}

func (e *Error) Error() string {
	if e.Body.Message == "" {
		return fmt.Sprintf("dps: HTTP %d", e.StatusCode)
	}
	return fmt.Sprintf("dps: HTTP %d, error %d: %s", e.StatusCode, e.Body.ErrorCode, e.Body.Message)
}

// StatusOf returns the HTTP status of an *Error, or 0.
func StatusOf(err error) int {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.StatusCode
	}
	return 0
}

// Page is one page of a query answer.
type Page struct {
	Continuation string
	ItemType     string
}

func (c *Client) do(ctx context.Context, method, path string, hdr map[string]string, in, out any) (http.Header, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.Endpoint, "/")+path+"?api-version="+APIVersion, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", sas.New(c.HostName, c.Key, c.KeyName, time.Now().Add(time.Hour)))
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	for k, v := range hdr {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		e := &Error{StatusCode: resp.StatusCode}
		json.Unmarshal(data, &e.Body)
		return resp.Header, e
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.Header, fmt.Errorf("client: decode answer: %w", err)
		}
	}
	return resp.Header, nil
}

func seg(s string) string { return url.PathEscape(s) }

// PutEnrollment creates (ifMatch "") or updates an individual enrollment.
func (c *Client) PutEnrollment(ctx context.Context, e wire.IndividualEnrollment, ifMatch string) (wire.IndividualEnrollment, error) {
	return call[wire.IndividualEnrollment](ctx, c, http.MethodPut, "/enrollments/"+seg(e.RegistrationID), map[string]string{"If-Match": ifMatch}, e)
}

// Enrollment gets an individual enrollment.
func (c *Client) Enrollment(ctx context.Context, id string) (wire.IndividualEnrollment, error) {
	return call[wire.IndividualEnrollment](ctx, c, http.MethodGet, "/enrollments/"+seg(id), nil, nil)
}

// DeleteEnrollment deletes an individual enrollment.
func (c *Client) DeleteEnrollment(ctx context.Context, id, ifMatch string) error {
	_, err := c.do(ctx, http.MethodDelete, "/enrollments/"+seg(id), map[string]string{"If-Match": ifMatch}, nil, nil)
	return err
}

// EnrollmentAttestation returns an enrollment's attestation including keys.
func (c *Client) EnrollmentAttestation(ctx context.Context, id string) (wire.AttestationMechanism, error) {
	return call[wire.AttestationMechanism](ctx, c, http.MethodPost, "/enrollments/"+seg(id)+"/attestationmechanism", nil, nil)
}

func query[T any](ctx context.Context, c *Client, path, q string, max int, continuation string) ([]T, Page, error) {
	var out []T
	hdr := map[string]string{"x-ms-continuation": continuation}
	if max > 0 {
		hdr["x-ms-max-item-count"] = strconv.Itoa(max)
	}
	var spec any
	if q != "" {
		spec = wire.QuerySpecification{Query: q}
	}
	h, err := c.do(ctx, http.MethodPost, path, hdr, spec, &out)
	if err != nil {
		return nil, Page{}, err
	}
	return out, Page{Continuation: h.Get("x-ms-continuation"), ItemType: h.Get("x-ms-item-type")}, nil
}

// QueryEnrollments returns one page of individual enrollments.
func (c *Client) QueryEnrollments(ctx context.Context, max int, continuation string) ([]wire.IndividualEnrollment, Page, error) {
	return query[wire.IndividualEnrollment](ctx, c, "/enrollments/query", "SELECT * FROM enrollments", max, continuation)
}

// BulkEnrollments runs a bulk operation on individual enrollments.
func (c *Client) BulkEnrollments(ctx context.Context, mode string, items []wire.IndividualEnrollment) (wire.BulkResult, error) {
	return call[wire.BulkResult](ctx, c, http.MethodPost, "/enrollments", nil, wire.BulkOperation{Mode: mode, Enrollments: items})
}

// PutGroup creates (ifMatch "") or updates an enrollment group.
func (c *Client) PutGroup(ctx context.Context, g wire.EnrollmentGroup, ifMatch string) (wire.EnrollmentGroup, error) {
	return call[wire.EnrollmentGroup](ctx, c, http.MethodPut, "/enrollmentGroups/"+seg(g.EnrollmentGroupID), map[string]string{"If-Match": ifMatch}, g)
}

// Group gets an enrollment group.
func (c *Client) Group(ctx context.Context, id string) (wire.EnrollmentGroup, error) {
	return call[wire.EnrollmentGroup](ctx, c, http.MethodGet, "/enrollmentGroups/"+seg(id), nil, nil)
}

// DeleteGroup deletes an enrollment group.
func (c *Client) DeleteGroup(ctx context.Context, id, ifMatch string) error {
	_, err := c.do(ctx, http.MethodDelete, "/enrollmentGroups/"+seg(id), map[string]string{"If-Match": ifMatch}, nil, nil)
	return err
}

// GroupAttestation returns a group's attestation including keys.
func (c *Client) GroupAttestation(ctx context.Context, id string) (wire.AttestationMechanism, error) {
	return call[wire.AttestationMechanism](ctx, c, http.MethodPost, "/enrollmentGroups/"+seg(id)+"/attestationmechanism", nil, nil)
}

// QueryGroups returns one page of enrollment groups.
func (c *Client) QueryGroups(ctx context.Context, max int, continuation string) ([]wire.EnrollmentGroup, Page, error) {
	return query[wire.EnrollmentGroup](ctx, c, "/enrollmentGroups/query", "SELECT * FROM enrollmentGroups", max, continuation)
}

// BulkGroups runs a bulk operation on enrollment groups.
func (c *Client) BulkGroups(ctx context.Context, mode string, items []wire.EnrollmentGroup) (wire.BulkResult, error) {
	return call[wire.BulkResult](ctx, c, http.MethodPost, "/enrollmentGroups", nil, wire.BulkOperation{Mode: mode, EnrollmentGroups: items})
}

// Registration gets a registration record.
func (c *Client) Registration(ctx context.Context, id string) (wire.DeviceRegistrationState, error) {
	return call[wire.DeviceRegistrationState](ctx, c, http.MethodGet, "/registrations/"+seg(id), nil, nil)
}

// DeleteRegistration deletes a registration record.
func (c *Client) DeleteRegistration(ctx context.Context, id, ifMatch string) error {
	_, err := c.do(ctx, http.MethodDelete, "/registrations/"+seg(id), map[string]string{"If-Match": ifMatch}, nil, nil)
	return err
}

// QueryRegistrations returns one page of the registration records of a group.
func (c *Client) QueryRegistrations(ctx context.Context, groupID string, max int, continuation string) ([]wire.DeviceRegistrationState, Page, error) {
	return query[wire.DeviceRegistrationState](ctx, c, "/registrations/"+seg(groupID)+"/query", "", max, continuation)
}

// PutCA adds or replaces a CA certificate held by dps.
func (c *Client) PutCA(ctx context.Context, name, certificatePEM, ifMatch string) (wire.CACertificate, error) {
	return call[wire.CACertificate](ctx, c, http.MethodPut, "/certificates/"+seg(name), map[string]string{"If-Match": ifMatch}, wire.CACertificate{Name: name, Certificate: certificatePEM})
}

// CA gets a CA certificate.
func (c *Client) CA(ctx context.Context, name string) (wire.CACertificate, error) {
	return call[wire.CACertificate](ctx, c, http.MethodGet, "/certificates/"+seg(name), nil, nil)
}

// CAs lists the CA certificates.
func (c *Client) CAs(ctx context.Context) ([]wire.CACertificate, error) {
	return call[[]wire.CACertificate](ctx, c, http.MethodGet, "/certificates", nil, nil)
}

// DeleteCA deletes a CA certificate.
func (c *Client) DeleteCA(ctx context.Context, name, ifMatch string) error {
	_, err := c.do(ctx, http.MethodDelete, "/certificates/"+seg(name), map[string]string{"If-Match": ifMatch}, nil, nil)
	return err
}

// GenerateVerificationCode asks for a proof-of-possession code.
func (c *Client) GenerateVerificationCode(ctx context.Context, name string) (wire.CACertificate, error) {
	return call[wire.CACertificate](ctx, c, http.MethodPost, "/certificates/"+seg(name)+"/generateVerificationCode", nil, nil)
}

// VerifyCA uploads the proof-of-possession certificate.
func (c *Client) VerifyCA(ctx context.Context, name, certificatePEM string) (wire.CACertificate, error) {
	return call[wire.CACertificate](ctx, c, http.MethodPost, "/certificates/"+seg(name)+"/verify", nil, wire.CACertificate{Name: name, Certificate: certificatePEM})
}

// call sends one request (do) and decodes its answer into a new T.
func call[T any](ctx context.Context, c *Client, method, path string, hdr map[string]string, in any) (T, error) {
	var out T
	_, err := c.do(ctx, method, path, hdr, in, &out)
	return out, err
}
