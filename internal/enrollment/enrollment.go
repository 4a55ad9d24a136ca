// Package enrollment is the management use case: create, read, update,
// delete and query individual enrollments, enrollment groups and
// registration records, with validation, key generation, ETag rules and
// bulk operations. Stores only persist; the rules live here.
package enrollment

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/opendps/dps"
)

// Store is the persistence the management use case needs. Both stores
// provide all of it.
//
// Error contract: reading or deleting a missing item is a *dps.Error of
// dps.KindNotFound. Puts take an If-Match value: "" creates
// (dps.KindConflict if the item exists), "*" creates or replaces, anything
// else must equal the stored ETag (dps.KindPrecondition otherwise, also
// when the item is missing); a delete with an If-Match other than "" or
// "*" that differs from the stored ETag is dps.KindPrecondition. IDs match
// in any case (dps.FoldID). A Group may share memory with the store's
// cache of decoded groups: do not modify it in place.
type Store interface {
	Enrollment(ctx context.Context, registrationID string) (dps.Enrollment, error)
	PutEnrollment(ctx context.Context, e dps.Enrollment, ifMatch string) (dps.Enrollment, error)
	DeleteEnrollment(ctx context.Context, registrationID, ifMatch string) error
	Enrollments(ctx context.Context, continuation string, limit int) ([]dps.Enrollment, string, error)
	Group(ctx context.Context, id string) (dps.Group, error)
	PutGroup(ctx context.Context, g dps.Group, ifMatch string) (dps.Group, error)
	DeleteGroup(ctx context.Context, id, ifMatch string) error
	GroupsPage(ctx context.Context, continuation string, limit int) ([]dps.Group, string, error)
	Registration(ctx context.Context, registrationID string) (dps.Registration, error)
	DeleteRegistration(ctx context.Context, registrationID, ifMatch string) error
	Registrations(ctx context.Context, groupID, continuation string, limit int) ([]dps.Registration, string, error)
	CAStore
}

// Options configure a Service.
type Options struct {
	Store      Store
	LinkedHubs []dps.LinkedHub
	// AllowHTTPWebhooks permits http:// custom allocation webhook URLs.
	AllowHTTPWebhooks bool
}

// Service implements the management use case.
type Service struct {
	o Options
}

// New returns a Service.
func New(o Options) *Service { return &Service{o: o} }

// MaxBulk is the largest number of items in a bulk operation.
const MaxBulk = 10

func invalid(format string, args ...any) error {
	return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

// GenerateKey returns a random 64-byte base64 key, the size Azure generates.
func GenerateKey() dps.Key {
	b := make([]byte, 64)
	rand.Read(b)
	return dps.Key(base64.StdEncoding.EncodeToString(b))
}

func validKey(k dps.Key) bool {
	b, err := base64.StdEncoding.DecodeString(string(k))
	return err == nil && len(b) >= 16 && len(b) <= 64
}

// validateSettings checks the members enrollments and groups share and
// fills in keys: given keys are kept, missing ones are taken from old (the
// stored version, so a get → modify → put never rotates a key) or generated.
func (s *Service) validateSettings(ctx context.Context, set *dps.Settings, old *dps.Settings, group bool) error {
	a := &set.Attestation
	switch a.Type {
	case dps.AttestationSymmetricKey:
		sk := a.SymmetricKey
		if sk == nil {
			sk = &dps.SymmetricKeyAttestation{}
			a.SymmetricKey = sk
		}
		var oldKeys *dps.SymmetricKeyAttestation
		if old != nil && old.Attestation.Type == dps.AttestationSymmetricKey {
			oldKeys = old.Attestation.SymmetricKey
		}
		for i, k := range []*dps.Key{&sk.PrimaryKey, &sk.SecondaryKey} {
			if *k != "" {
				if !validKey(*k) {
					name := [...]string{"primaryKey", "secondaryKey"}[i]
					return invalid("attestation.symmetricKey.%s must be base64 of 16 to 64 bytes", name)
				}
				continue
			}
			switch {
			case oldKeys != nil && i == 0 && oldKeys.PrimaryKey != "":
				*k = oldKeys.PrimaryKey
			case oldKeys != nil && i == 1 && oldKeys.SecondaryKey != "":
				*k = oldKeys.SecondaryKey
			default:
				*k = GenerateKey()
			}
		}
	case dps.AttestationX509:
		x := a.X509
		n := 0
		check := func(what, c string) error {
			if c == "" {
				return nil
			}
			n++
			if _, err := dps.ParseCertificate(c); err != nil {
				return invalid("attestation.x509.%s: %s", what, dps.AsError(err).Message)
			}
			return nil
		}
		if x.ClientCertificates != nil {
			if group {
				return invalid("attestation.x509.clientCertificates is for individual enrollments; groups use signingCertificates or caReferences")
			}
			if err := errors.Join(check("clientCertificates.primary", x.ClientCertificates.Primary), check("clientCertificates.secondary", x.ClientCertificates.Secondary)); err != nil {
				return err
			}
		}
		if x.SigningCertificates != nil {
			if err := errors.Join(check("signingCertificates.primary", x.SigningCertificates.Primary), check("signingCertificates.secondary", x.SigningCertificates.Secondary)); err != nil {
				return err
			}
		}
		if r := x.CAReferences; r != nil && (r.Primary != "" || r.Secondary != "") {
			if !group {
				return invalid("attestation.x509.caReferences is for enrollment groups")
			}
			for _, name := range []string{r.Primary, r.Secondary} {
				if name == "" {
					continue
				}
				if _, err := s.o.Store.CACertificate(ctx, name); err != nil {
					if dps.KindOf(err) == dps.KindNotFound {
						return invalid("attestation.x509.caReferences: no CA certificate named %q (add it with dpsctl ca add)", name)
					}
					return err
				}
			}
			n++
		}
		if n == 0 {
			return invalid("attestation.x509 needs a certificate (clientCertificates, signingCertificates) or caReferences")
		}
	case dps.AttestationTPM:
		if group {
			return invalid("enrollment groups do not support TPM attestation")
		}
		if err := dps.ValidateTPMEndorsementKey(a.TPM.EndorsementKey); err != nil {
			return invalid("attestation.tpm.endorsementKey: %s", dps.AsError(err).Message)
		}
		if a.TPM.StorageRootKey != "" {
			if _, err := base64.StdEncoding.DecodeString(a.TPM.StorageRootKey); err != nil {
				return invalid("attestation.tpm.storageRootKey must be base64")
			}
		}
	}
	// certificateAuthorityName and certificatePolicyName (credentialPolicyName)
	// are stored and echoed whatever they name: an enrollment copied from
	// Azure names Azure Device Registry policies this instance may not
	// have. They are checked when a device sends a CSR (internal/issuance).
	for _, h := range set.IoTHubs {
		if !s.linked(h) {
			return invalid("iotHubs: %q is not a linked IoT hub of this instance", h)
		}
	}
	if set.IoTHubHostName != "" && !s.linked(set.IoTHubHostName) {
		return invalid("iotHubHostName: %q is not a linked IoT hub of this instance", set.IoTHubHostName)
	}
	if len(set.InitialTwin) > 0 {
		var twin struct {
			Tags       json.RawMessage `json:"tags"`
			Properties *struct {
				Desired json.RawMessage `json:"desired"`
			} `json:"properties"`
		}
		if err := json.Unmarshal(set.InitialTwin, &twin); err != nil {
			return invalid("initialTwin must be an object {tags, properties: {desired}}")
		}
	}
	switch set.AllocationPolicy {
	case dps.AllocationStatic:
		n := len(set.IoTHubs)
		if n == 0 && set.IoTHubHostName != "" {
			n = 1
		}
		if n != 1 {
			return invalid("allocationPolicy static requires exactly one hub in iotHubs")
		}
	case dps.AllocationCustom:
		// An update that omits the (never returned) signing secret keeps it.
		if ca := set.CustomAllocation; ca != nil && ca.SigningSecret == "" && old != nil && old.CustomAllocation != nil {
			c := *ca
			c.SigningSecret = old.CustomAllocation.SigningSecret
			set.CustomAllocation = &c
		}
		ca := set.CustomAllocation
		if ca == nil || ca.WebhookURL == "" || ca.APIVersion == "" {
			return invalid("allocationPolicy custom requires customAllocationDefinition with webhookUrl and apiVersion")
		}
		u, err := url.Parse(ca.WebhookURL)
		if err != nil || !u.IsAbs() || u.Host == "" {
			return invalid("customAllocationDefinition.webhookUrl must be an absolute URL")
		}
		if u.User != nil {
			return invalid("customAllocationDefinition.webhookUrl must not contain user information")
		}
		switch strings.ToLower(u.Scheme) {
		case "https":
		case "http":
			if !s.o.AllowHTTPWebhooks {
				return invalid("customAllocationDefinition.webhookUrl must use https (http is allowed only when the instance enables it)")
			}
		default:
			return invalid("customAllocationDefinition.webhookUrl must use https")
		}
	}
	return nil
}

func (s *Service) linked(h string) bool {
	for _, l := range s.o.LinkedHubs {
		if strings.EqualFold(l.HostName, h) {
			return true
		}
	}
	return false
}

// PutEnrollment creates or updates an individual enrollment. ifMatch ""
// creates (an existing enrollment is a conflict), "*" creates or replaces,
// anything else must equal the stored ETag.
func (s *Service) PutEnrollment(ctx context.Context, e dps.Enrollment, ifMatch string) (dps.Enrollment, error) {
	if err := dps.ValidateRegistrationID(e.RegistrationID); err != nil {
		return e, err
	}
	if e.DeviceID != "" {
		if err := dps.ValidateRegistrationID(e.DeviceID); err != nil {
			return e, invalid("deviceId: %s", strings.Replace(dps.AsError(err).Message, "registration ID", "device ID", 1))
		}
	}
	return put(ctx, s, ifMatch, false, e, func(e *dps.Enrollment) *dps.Settings { return &e.Settings },
		func() (dps.Enrollment, error) { return s.o.Store.Enrollment(ctx, e.RegistrationID) },
		func(e dps.Enrollment, cond string) (dps.Enrollment, error) {
			return s.o.Store.PutEnrollment(ctx, e, cond)
		})
}

// put is the read → merge keys → validate → conditional write of
// enrollments and groups. With If-Match "*", the write is conditioned on the
// ETag just read, so a write in between is detected and the merge redone.
func put[T any](ctx context.Context, s *Service, ifMatch string, group bool, v T, settings func(*T) *dps.Settings,
	get func() (T, error), write func(T, string) (T, error)) (T, error) {
	for range 3 {
		old, err := get()
		var oldSet *dps.Settings
		cond := ifMatch
		switch {
		case err == nil:
			oldSet = settings(&old)
			if ifMatch == "*" {
				cond = oldSet.ETag
			}
		case dps.KindOf(err) != dps.KindNotFound:
			return v, err
		}
		candidate := v
		set := settings(&candidate)
		*set = cloneSettings(*set)
		if err := s.validateSettings(ctx, set, oldSet, group); err != nil {
			return v, err
		}
		out, err := write(candidate, cond)
		if dps.KindOf(err) == dps.KindPrecondition && ifMatch == "*" {
			continue
		}
		return out, err
	}
	return v, &dps.Error{Kind: dps.KindConflict, Code: dps.CodeConflict, Message: "the enrollment changed concurrently; retry"}
}

// PutGroup creates or updates an enrollment group, with PutEnrollment's ETag rules.
func (s *Service) PutGroup(ctx context.Context, g dps.Group, ifMatch string) (dps.Group, error) {
	if err := dps.ValidateGroupID(g.ID); err != nil {
		return g, err
	}
	return put(ctx, s, ifMatch, true, g, func(g *dps.Group) *dps.Settings { return &g.Settings },
		func() (dps.Group, error) { return s.o.Store.Group(ctx, g.ID) },
		func(g dps.Group, cond string) (dps.Group, error) { return s.o.Store.PutGroup(ctx, g, cond) })
}

func cloneSettings(s dps.Settings) dps.Settings {
	if s.Attestation.SymmetricKey != nil {
		k := *s.Attestation.SymmetricKey
		s.Attestation.SymmetricKey = &k
	}
	return s
}

func notFoundCode(err error, code int) error {
	if dps.KindOf(err) == dps.KindNotFound {
		e := *dps.AsError(err)
		e.Code = code
		return &e
	}
	return err
}

// Enrollment returns an individual enrollment (with keys; callers decide
// whether to show them).
func (s *Service) Enrollment(ctx context.Context, id string) (dps.Enrollment, error) {
	e, err := s.o.Store.Enrollment(ctx, id)
	return e, notFoundCode(err, dps.CodeNotFound)
}

// DeleteEnrollment deletes an individual enrollment.
func (s *Service) DeleteEnrollment(ctx context.Context, id, ifMatch string) error {
	return notFoundCode(s.o.Store.DeleteEnrollment(ctx, id, ifMatch), dps.CodeNotFound)
}

// Enrollments returns a page of individual enrollments.
func (s *Service) Enrollments(ctx context.Context, continuation string, limit int) ([]dps.Enrollment, string, error) {
	return s.o.Store.Enrollments(ctx, continuation, limit)
}

// Group returns an enrollment group.
func (s *Service) Group(ctx context.Context, id string) (dps.Group, error) {
	g, err := s.o.Store.Group(ctx, id)
	return g, notFoundCode(err, dps.CodeGroupNotFound)
}

// DeleteGroup deletes an enrollment group.
func (s *Service) DeleteGroup(ctx context.Context, id, ifMatch string) error {
	return notFoundCode(s.o.Store.DeleteGroup(ctx, id, ifMatch), dps.CodeGroupNotFound)
}

// Groups returns a page of enrollment groups.
func (s *Service) Groups(ctx context.Context, continuation string, limit int) ([]dps.Group, string, error) {
	return s.o.Store.GroupsPage(ctx, continuation, limit)
}

// Registration returns a registration record.
func (s *Service) Registration(ctx context.Context, id string) (dps.Registration, error) {
	r, err := s.o.Store.Registration(ctx, id)
	return r, notFoundCode(err, dps.CodeRegistrationStateNotFound)
}

// DeleteRegistration deletes a registration record; the device's next
// registration is then an initial assignment.
func (s *Service) DeleteRegistration(ctx context.Context, id, ifMatch string) error {
	return notFoundCode(s.o.Store.DeleteRegistration(ctx, id, ifMatch), dps.CodeRegistrationStateNotFound)
}

// Registrations returns a page of the registration records of a group.
func (s *Service) Registrations(ctx context.Context, groupID, continuation string, limit int) ([]dps.Registration, string, error) {
	if err := dps.ValidateGroupID(groupID); err != nil {
		return nil, "", err
	}
	return s.o.Store.Registrations(ctx, groupID, continuation, limit)
}

// BulkMode is a bulk operation mode.
type BulkMode string

const (
	BulkCreate            BulkMode = "create"
	BulkUpdate            BulkMode = "update"
	BulkUpdateIfMatchETag BulkMode = "updateIfMatchETag"
	BulkDelete            BulkMode = "delete"
)

// ParseBulkMode accepts a mode in any case.
func ParseBulkMode(s string) (BulkMode, error) {
	for _, m := range []BulkMode{BulkCreate, BulkUpdate, BulkUpdateIfMatchETag, BulkDelete} {
		if strings.EqualFold(s, string(m)) {
			return m, nil
		}
	}
	return "", invalid("mode %q must be create, update, updateIfMatchETag or delete", s)
}

// BulkItemError is the failure of one bulk item.
type BulkItemError struct {
	ID  string
	Err error
}

func (m BulkMode) ifMatch(etag string) string {
	switch m {
	case BulkCreate:
		return ""
	case BulkUpdateIfMatchETag:
		if etag == "" {
			return ""
		}
		return etag
	default:
		return "*"
	}
}

// checkBulk enforces the size limit.
func checkBulk(n int) error {
	if n == 0 {
		return invalid("a bulk operation needs at least one item")
	}
	if n > MaxBulk {
		return invalid("a bulk operation takes at most %d items, got %d", MaxBulk, n)
	}
	return nil
}

// BulkEnrollments applies mode to each enrollment and reports per-item
// failures. Items that fail do not stop the others.
func (s *Service) BulkEnrollments(ctx context.Context, mode BulkMode, items []dps.Enrollment) ([]BulkItemError, error) {
	if err := checkBulk(len(items)); err != nil {
		return nil, err
	}
	var errs []BulkItemError
	for _, e := range items {
		var err error
		if mode == BulkDelete {
			err = s.DeleteEnrollment(ctx, e.RegistrationID, e.ETag)
		} else {
			_, err = s.PutEnrollment(ctx, e, mode.ifMatch(e.ETag))
		}
		if err != nil {
			errs = append(errs, BulkItemError{ID: e.RegistrationID, Err: err})
		}
	}
	return errs, nil
}

// BulkGroups applies mode to each group and reports per-item failures.
func (s *Service) BulkGroups(ctx context.Context, mode BulkMode, items []dps.Group) ([]BulkItemError, error) {
	if err := checkBulk(len(items)); err != nil {
		return nil, err
	}
	var errs []BulkItemError
	for _, g := range items {
		var err error
		if mode == BulkDelete {
			err = s.DeleteGroup(ctx, g.ID, g.ETag)
		} else {
			_, err = s.PutGroup(ctx, g, mode.ifMatch(g.ETag))
		}
		if err != nil {
			errs = append(errs, BulkItemError{ID: g.ID, Err: err})
		}
	}
	return errs, nil
}
