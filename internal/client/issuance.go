package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/opendps/dps/internal/wire"
)

// Certificate issuance's resources (a dps extension of the service API).

// PutIssuingCA creates an issuing CA: generated (KeyType, Subject,
// ValidityDays) or imported (Certificate and Key, PEM).
func (c *Client) PutIssuingCA(ctx context.Context, ca wire.IssuingCA, ifMatch string) (wire.IssuingCA, error) {
	return call[wire.IssuingCA](ctx, c, http.MethodPut, "/certificateAuthorities/"+seg(ca.Name), map[string]string{"If-Match": ifMatch}, ca)
}

// IssuingCA gets an issuing CA (never its key).
func (c *Client) IssuingCA(ctx context.Context, name string) (wire.IssuingCA, error) {
	return call[wire.IssuingCA](ctx, c, http.MethodGet, "/certificateAuthorities/"+seg(name), nil, nil)
}

// IssuingCAs lists the issuing CAs.
func (c *Client) IssuingCAs(ctx context.Context) ([]wire.IssuingCA, error) {
	return call[[]wire.IssuingCA](ctx, c, http.MethodGet, "/certificateAuthorities", nil, nil)
}

// DeleteIssuingCA deletes an issuing CA.
func (c *Client) DeleteIssuingCA(ctx context.Context, name, ifMatch string) error {
	_, err := c.do(ctx, http.MethodDelete, "/certificateAuthorities/"+seg(name), map[string]string{"If-Match": ifMatch}, nil, nil)
	return err
}

// CRL fetches an issuing CA's certificate revocation list (DER). It needs
// no token.
func (c *Client) CRL(ctx context.Context, name string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.Endpoint, "/")+"/certificateAuthorities/"+seg(name)+"/crl", nil)
	if err != nil {
		return nil, err
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
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("client: CRL of %s: HTTP %d: %s", name, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// PutCredentialPolicy creates (ifMatch "") or updates a credential policy.
func (c *Client) PutCredentialPolicy(ctx context.Context, p wire.CredentialPolicy, ifMatch string) (wire.CredentialPolicy, error) {
	return call[wire.CredentialPolicy](ctx, c, http.MethodPut, "/credentialPolicies/"+seg(p.Name), map[string]string{"If-Match": ifMatch}, p)
}

// CredentialPolicy gets a credential policy.
func (c *Client) CredentialPolicy(ctx context.Context, name string) (wire.CredentialPolicy, error) {
	return call[wire.CredentialPolicy](ctx, c, http.MethodGet, "/credentialPolicies/"+seg(name), nil, nil)
}

// CredentialPolicies lists the credential policies.
func (c *Client) CredentialPolicies(ctx context.Context) ([]wire.CredentialPolicy, error) {
	return call[[]wire.CredentialPolicy](ctx, c, http.MethodGet, "/credentialPolicies", nil, nil)
}

// DeleteCredentialPolicy deletes a credential policy.
func (c *Client) DeleteCredentialPolicy(ctx context.Context, name, ifMatch string) error {
	_, err := c.do(ctx, http.MethodDelete, "/credentialPolicies/"+seg(name), map[string]string{"If-Match": ifMatch}, nil, nil)
	return err
}
