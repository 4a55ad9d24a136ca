// Package access checks service API requests against shared access
// policies: a SAS token whose skn names a policy, signed with one of its
// keys, for a resource that names this service, carrying the right the
// operation needs. The DPS service API checks the instance's policies
// (the DPS rights); each built-in IoT hub's service API checks that hub's
// policies (the IoT Hub rights), with the hub's host name as the service.
package access

import (
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/sas"
)

// Right is a permission of a shared access policy.
type Right string

const (
	ServiceConfig           Right = "ServiceConfig"
	EnrollmentRead          Right = "EnrollmentRead"
	EnrollmentWrite         Right = "EnrollmentWrite"
	RegistrationStatusRead  Right = "RegistrationStatusRead"
	RegistrationStatusWrite Right = "RegistrationStatusWrite"
)

// The rights of an IoT hub's shared access policies, spelled as Azure
// spells them (its portal, ARM templates and connection strings).
const (
	RegistryRead   Right = "RegistryRead"   // read device identities
	RegistryWrite  Right = "RegistryWrite"  // create, update and delete device identities
	ServiceConnect Right = "ServiceConnect" // twins, direct methods, queries, cloud-to-device messages
	DeviceConnect  Right = "DeviceConnect"  // the device-facing endpoints on behalf of any device
)

// HubRights returns the rights an IoT hub's policy may hold.
func HubRights() []Right { return []Right{RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect} }

// Policy is one shared access policy.
type Policy struct {
	Name         string
	PrimaryKey   string // base64
	SecondaryKey string // base64, optional
	Rights       []Right
}

// Checker verifies service API tokens.
type Checker struct {
	policies []policy
	hosts    []string
	skew     time.Duration
	now      func() time.Time
}

type policy struct {
	Policy
	keys [][]byte
}

// New returns a Checker. hosts are the host names a token's resource may
// name (compared case-insensitively, ports ignored).
func New(policies []Policy, hosts []string, now func() time.Time) (*Checker, error) {
	c := &Checker{hosts: hosts, skew: 5 * time.Minute, now: now}
	if c.now == nil {
		c.now = time.Now
	}
	for _, p := range policies {
		pp := policy{Policy: p}
		for _, k := range []string{p.PrimaryKey, p.SecondaryKey} {
			if k == "" {
				continue
			}
			raw, err := base64.StdEncoding.DecodeString(k)
			if err != nil {
				return nil, fmt.Errorf("access policy %s: key is not base64", p.Name)
			}
			pp.keys = append(pp.keys, raw)
		}
		c.policies = append(c.policies, pp)
	}
	return c, nil
}

func unauthorized(msg string) error {
	return &dps.Error{Kind: dps.KindUnauthorized, Code: dps.CodeUnauthorized, Message: msg}
}

// Check verifies token for a request to path that needs right. It returns
// a KindUnauthorized error for a missing, malformed, expired or wrongly
// signed token and a KindForbidden error for a valid token without right.
func (c *Checker) Check(token, path string, right Right) error {
	if token == "" {
		return unauthorized("Authorization header with a SharedAccessSignature is required.")
	}
	tok, err := sas.Parse(token)
	if err != nil {
		return unauthorized("The SharedAccessSignature is malformed.")
	}
	if err := tok.CheckExpiry(c.now(), c.skew); err != nil {
		return unauthorized("The SharedAccessSignature has expired.")
	}
	if !c.resourceOK(tok.Resource, path) {
		return unauthorized("The SharedAccessSignature resource (sr) does not name this service.")
	}
	for _, p := range c.policies {
		if !strings.EqualFold(p.Name, tok.KeyName) {
			continue
		}
		for _, k := range p.keys {
			if tok.Valid(k) {
				for _, r := range p.Rights {
					if r == right {
						return nil
					}
				}
				return &dps.Error{Kind: dps.KindForbidden, Code: dps.CodeForbidden, Message: fmt.Sprintf("The access policy %q lacks the %s right this operation needs.", p.Name, right)}
			}
		}
	}
	return unauthorized("The SharedAccessSignature is not valid for any access policy of this service.")
}

// resourceOK checks that sr names this service: its host part equals one
// of the configured hosts (ports ignored) and any path after it is a
// segment prefix of the request path.
func (c *Checker) resourceOK(resource, path string) bool {
	resource = strings.TrimPrefix(strings.TrimPrefix(resource, "https://"), "http://")
	host, rest, _ := strings.Cut(resource, "/")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	ok := false
	for _, h := range c.hosts {
		if strings.EqualFold(h, host) {
			ok = true
			break
		}
	}
	if !ok {
		return false
	}
	rest = strings.Trim(rest, "/")
	if rest == "" {
		return true
	}
	p := strings.Trim(path, "/")
	return strings.EqualFold(p, rest) || strings.HasPrefix(strings.ToLower(p), strings.ToLower(rest)+"/")
}
