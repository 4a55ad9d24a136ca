package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/enrollment"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/regevents"
	"github.com/opendps/dps/internal/throttle"
	"github.com/opendps/dps/internal/wire"
)

// Manager is the management use case as the service API uses it.
type Manager interface {
	PutEnrollment(ctx context.Context, e dps.Enrollment, ifMatch string) (dps.Enrollment, error)
	Enrollment(ctx context.Context, id string) (dps.Enrollment, error)
	DeleteEnrollment(ctx context.Context, id, ifMatch string) error
	Enrollments(ctx context.Context, continuation string, limit int) ([]dps.Enrollment, string, error)
	BulkEnrollments(ctx context.Context, mode enrollment.BulkMode, items []dps.Enrollment) ([]enrollment.BulkItemError, error)
	PutGroup(ctx context.Context, g dps.Group, ifMatch string) (dps.Group, error)
	Group(ctx context.Context, id string) (dps.Group, error)
	DeleteGroup(ctx context.Context, id, ifMatch string) error
	Groups(ctx context.Context, continuation string, limit int) ([]dps.Group, string, error)
	BulkGroups(ctx context.Context, mode enrollment.BulkMode, items []dps.Group) ([]enrollment.BulkItemError, error)
	Registration(ctx context.Context, id string) (dps.Registration, error)
	DeleteRegistration(ctx context.Context, id, ifMatch string) error
	Registrations(ctx context.Context, groupID, continuation string, limit int) ([]dps.Registration, string, error)
	PutCA(ctx context.Context, name, certificate, ifMatch string) (dps.CACertificate, error)
	CA(ctx context.Context, name string) (dps.CACertificate, error)
	CAs(ctx context.Context) ([]dps.CACertificate, error)
	DeleteCA(ctx context.Context, name, ifMatch string) error
	GenerateVerificationCode(ctx context.Context, name string) (dps.CACertificate, error)
	VerifyCA(ctx context.Context, name, certificate string, now time.Time) (dps.CACertificate, error)
}

// Authorizer checks a service API token for the right an operation needs.
type Authorizer interface {
	Check(token, path string, right access.Right) error
}

// ServiceOptions configure a ServiceHandler.
type ServiceOptions struct {
	Manager    Manager
	Authorizer Authorizer
	Logger     *slog.Logger
	Now        func() time.Time
	// MaxPageSize caps query pages (default 1000).
	MaxPageSize int
	// Faults, when set, is managed at /faults (faults.go); nil: fault
	// injection is off and /faults says so.
	Faults *faults.Injector
	// Throttle limits the requests of authorized callers
	// (servicethrottle.go; /faults is not limited); nil: no limit.
	Throttle *throttle.ServiceLimiter
	// Events, when set, is the registration-events feed served at
	// /registrationEvents (regevents.go).
	Events regevents.Feed
	// Issuance, when set, is managed at /certificateAuthorities and
	// /credentialPolicies (issuance.go).
	Issuance Issuance
}

// ServiceHandler serves the DPS service (management) API.
type ServiceHandler struct {
	o   ServiceOptions
	err *Handler // shares error writing with the device API
}

// NewService returns a ServiceHandler.
func NewService(o ServiceOptions) *ServiceHandler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxPageSize <= 0 {
		o.MaxPageSize = 1000
	}
	return &ServiceHandler{o: o, err: New(Options{Logger: o.Logger, Now: o.Now})}
}

type route struct {
	method string
	right  access.Right
	serve  func(w http.ResponseWriter, r *http.Request, ids []string)
}

func (h *ServiceHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	segs, ok := Segments(r.URL.EscapedPath())
	if !ok || len(segs) == 0 {
		h.notFound(w, r)
		return
	}
	var routes []route
	var ids []string
	kind := strings.ToLower(segs[0])
	switch {
	case (kind == "enrollments" || kind == "enrollmentgroups") && len(segs) == 1:
		routes = []route{{http.MethodPost, access.EnrollmentWrite, h.bulk}}
	case (kind == "enrollments" || kind == "enrollmentgroups") && len(segs) == 2 && strings.EqualFold(segs[1], "query") && r.Method == http.MethodPost:
		routes = []route{{http.MethodPost, access.EnrollmentRead, h.query}}
	case (kind == "enrollments" || kind == "enrollmentgroups") && len(segs) == 2:
		ids = segs[1:]
		routes = []route{
			{http.MethodGet, access.EnrollmentRead, h.get},
			{http.MethodPut, access.EnrollmentWrite, h.put},
			{http.MethodDelete, access.EnrollmentWrite, h.delete},
		}
	case (kind == "enrollments" || kind == "enrollmentgroups") && len(segs) == 3 && strings.EqualFold(segs[2], "attestationmechanism"):
		ids = segs[1:2]
		routes = []route{{http.MethodPost, access.EnrollmentWrite, h.attestation}}
	case kind == "registrations" && len(segs) == 2:
		ids = segs[1:]
		routes = []route{
			{http.MethodGet, access.RegistrationStatusRead, h.getRegistration},
			{http.MethodDelete, access.RegistrationStatusWrite, h.deleteRegistration},
		}
	case kind == "certificates" && len(segs) == 1:
		routes = []route{{http.MethodGet, access.ServiceConfig, h.listCAs}}
	case kind == "certificates" && len(segs) == 2:
		ids = segs[1:]
		routes = []route{
			{http.MethodGet, access.ServiceConfig, h.getCA},
			{http.MethodPut, access.ServiceConfig, h.putCA},
			{http.MethodDelete, access.ServiceConfig, h.deleteCA},
		}
	case kind == "certificates" && len(segs) == 3 && strings.EqualFold(segs[2], "generateVerificationCode"):
		ids = segs[1:2]
		routes = []route{{http.MethodPost, access.ServiceConfig, h.generateCode}}
	case kind == "certificates" && len(segs) == 3 && strings.EqualFold(segs[2], "verify"):
		ids = segs[1:2]
		routes = []route{{http.MethodPost, access.ServiceConfig, h.verifyCA}}
	case kind == "registrations" && len(segs) == 3 && strings.EqualFold(segs[2], "query"):
		ids = segs[1:2]
		routes = []route{{http.MethodPost, access.RegistrationStatusRead, h.queryRegistrations}}
	default:
		var found bool
		if routes, ids, found = h.faultRoutes(segs); !found {
			if routes, ids, found = h.eventRoutes(segs); !found { // regevents.go
				if routes, ids, found = h.issuanceRoutes(segs); !found {
					h.notFound(w, r)
					return
				}
			}
		}
	}
	var allowed []string
	for _, rt := range routes {
		if rt.method != r.Method {
			allowed = append(allowed, rt.method)
			continue
		}
		if rt.right != public {
			if err := h.o.Authorizer.Check(r.Header.Get("Authorization"), r.URL.Path, rt.right); err != nil {
				h.err.writeError(w, r, err)
				return
			}
		}
		if kind != "faults" && h.throttled(w, r) {
			return
		}
		rt.serve(w, r, ids)
		return
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	h.err.writeError(w, r, dps.Errorf(dps.KindMethodNotAllowed, "method %s is not allowed here; use %s", r.Method, strings.Join(allowed, " or ")))
}

func (h *ServiceHandler) notFound(w http.ResponseWriter, r *http.Request) {
	h.err.writeError(w, r, &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNoSuchEndpoint, Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
}

func groups(r *http.Request) bool {
	segs, _ := Segments(r.URL.EscapedPath())
	return strings.EqualFold(segs[0], "enrollmentGroups")
}

// ifMatch returns the If-Match header ("" when absent).
func ifMatch(r *http.Request) string { return strings.TrimSpace(r.Header.Get("If-Match")) }

func readJSON(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return &dps.Error{Kind: dps.KindTooLarge, Message: "request body exceeds the 96 KB limit"}
		}
		return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "could not read the request body"}
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		if allowEmpty {
			return nil
		}
		return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "a JSON request body is required"}
	}
	if err := json.Unmarshal(data, v); err != nil {
		return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "the request body is not valid JSON for this operation: " + err.Error()}
	}
	return nil
}

func (h *ServiceHandler) put(w http.ResponseWriter, r *http.Request, ids []string) {
	if groups(r) {
		var body wire.EnrollmentGroup
		if err := readJSON(w, r, &body, false); err != nil {
			h.err.writeError(w, r, err)
			return
		}
		if body.EnrollmentGroupID != "" && !strings.EqualFold(body.EnrollmentGroupID, ids[0]) {
			h.err.writeError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "enrollmentGroupId in the body does not match the path"})
			return
		}
		body.EnrollmentGroupID = ids[0]
		g, err := wire.ToGroup(body)
		if err == nil {
			g, err = h.o.Manager.PutGroup(r.Context(), g, ifMatch(r))
		}
		if err != nil {
			h.err.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, wire.FromGroup(g, true))
		return
	}
	var body wire.IndividualEnrollment
	if err := readJSON(w, r, &body, false); err != nil {
		h.err.writeError(w, r, err)
		return
	}
	if body.RegistrationID != "" && !strings.EqualFold(body.RegistrationID, ids[0]) {
		h.err.writeError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "registrationId in the body does not match the path"})
		return
	}
	body.RegistrationID = ids[0]
	e, err := wire.ToEnrollment(body)
	if err == nil {
		e, err = h.o.Manager.PutEnrollment(r.Context(), e, ifMatch(r))
	}
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, h.enrollmentOut(r.Context(), e, true))
}

// enrollmentOut renders an enrollment with its device's registration state.
func (h *ServiceHandler) enrollmentOut(ctx context.Context, e dps.Enrollment, withKeys bool) wire.IndividualEnrollment {
	out := wire.FromEnrollment(e, withKeys)
	if reg, err := h.o.Manager.Registration(ctx, e.RegistrationID); err == nil {
		out.RegistrationState = wire.FromRegistrationState(reg)
	}
	return out
}

// mayWrite reports whether the caller may write enrollments. Only such a
// caller sees a webhook URL whole when reading: its query holds the
// function key that calls the webhook (Azure Functions' ?code=).
func (h *ServiceHandler) mayWrite(r *http.Request) bool {
	return h.o.Authorizer.Check(r.Header.Get("Authorization"), r.URL.Path, access.EnrollmentWrite) == nil
}

// readOut renders an enrollment for a read, its webhook URL masked unless
// the caller may write enrollments.
func (h *ServiceHandler) readOut(ctx context.Context, e dps.Enrollment, mayWrite bool) wire.IndividualEnrollment {
	out := h.enrollmentOut(ctx, e, false)
	if !mayWrite {
		out.CustomAllocationDefinition = wire.MaskCustomAllocation(out.CustomAllocationDefinition)
	}
	return out
}

// readGroupOut is readOut for an enrollment group.
func readGroupOut(g dps.Group, mayWrite bool) wire.EnrollmentGroup {
	out := wire.FromGroup(g, false)
	if !mayWrite {
		out.CustomAllocationDefinition = wire.MaskCustomAllocation(out.CustomAllocationDefinition)
	}
	return out
}

func (h *ServiceHandler) get(w http.ResponseWriter, r *http.Request, ids []string) {
	if groups(r) {
		g, err := h.o.Manager.Group(r.Context(), ids[0])
		if err != nil {
			h.err.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, readGroupOut(g, h.mayWrite(r)))
		return
	}
	e, err := h.o.Manager.Enrollment(r.Context(), ids[0])
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, h.readOut(r.Context(), e, h.mayWrite(r)))
}

func (h *ServiceHandler) delete(w http.ResponseWriter, r *http.Request, ids []string) {
	var err error
	if groups(r) {
		err = h.o.Manager.DeleteGroup(r.Context(), ids[0], ifMatch(r))
	} else {
		err = h.o.Manager.DeleteEnrollment(r.Context(), ids[0], ifMatch(r))
	}
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *ServiceHandler) attestation(w http.ResponseWriter, r *http.Request, ids []string) {
	if groups(r) {
		g, err := h.o.Manager.Group(r.Context(), ids[0])
		if err != nil {
			h.err.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, wire.FromAttestation(g.Attestation, true))
		return
	}
	e, err := h.o.Manager.Enrollment(r.Context(), ids[0])
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.FromAttestation(e.Attestation, true))
}

func (h *ServiceHandler) bulk(w http.ResponseWriter, r *http.Request, _ []string) {
	var body wire.BulkOperation
	if err := readJSON(w, r, &body, false); err != nil {
		h.err.writeError(w, r, err)
		return
	}
	mode, err := enrollment.ParseBulkMode(body.Mode)
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	group := groups(r)
	n := len(body.Enrollments)
	if group {
		n = len(body.EnrollmentGroups)
	}
	if n == 0 || n > enrollment.MaxBulk {
		h.err.writeError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "a bulk operation takes 1 to " + strconv.Itoa(enrollment.MaxBulk) + " items, got " + strconv.Itoa(n)})
		return
	}
	res := wire.BulkResult{Errors: []wire.BulkError{}}
	var itemErrs []enrollment.BulkItemError
	if group {
		var items []dps.Group
		for _, it := range body.EnrollmentGroups {
			g, err := wire.ToGroup(it)
			if err != nil && mode != enrollment.BulkDelete {
				res.Errors = append(res.Errors, bulkError(it.EnrollmentGroupID, true, err))
				continue
			}
			g.ID, g.ETag = it.EnrollmentGroupID, it.ETag
			items = append(items, g)
		}
		if len(items) > 0 {
			itemErrs, err = h.o.Manager.BulkGroups(r.Context(), mode, items)
		}
	} else {
		var items []dps.Enrollment
		for _, it := range body.Enrollments {
			e, err := wire.ToEnrollment(it)
			if err != nil && mode != enrollment.BulkDelete {
				res.Errors = append(res.Errors, bulkError(it.RegistrationID, false, err))
				continue
			}
			e.RegistrationID, e.ETag = it.RegistrationID, it.ETag
			items = append(items, e)
		}
		if len(items) > 0 {
			itemErrs, err = h.o.Manager.BulkEnrollments(r.Context(), mode, items)
		}
	}
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	for _, ie := range itemErrs {
		res.Errors = append(res.Errors, bulkError(ie.ID, group, ie.Err))
	}
	res.IsSuccessful = len(res.Errors) == 0
	writeJSON(w, http.StatusOK, res)
}

func bulkError(id string, group bool, err error) wire.BulkError {
	_, body := wire.Error(err, "", time.Time{})
	be := wire.BulkError{ErrorCode: body.ErrorCode, ErrorStatus: body.Message}
	if group {
		be.EnrollmentGroupID = id
	} else {
		be.RegistrationID = id
	}
	return be
}

// queryText matches the query texts dps supports: "*", "SELECT *" and
// "SELECT * FROM <collection>", any case.
var queryText = regexp.MustCompile(`(?i)^\s*(\*|select\s+\*(\s+from\s+([a-z]+))?)\s*$`)

func (h *ServiceHandler) checkQuery(w http.ResponseWriter, r *http.Request, allowEmpty bool, collections ...string) bool {
	var q wire.QuerySpecification
	if err := readJSON(w, r, &q, allowEmpty); err != nil {
		h.err.writeError(w, r, err)
		return false
	}
	if q.Query == "" && allowEmpty {
		return true
	}
	m := queryText.FindStringSubmatch(q.Query)
	ok := m != nil
	if ok && m[3] != "" {
		ok = false
		for _, c := range collections {
			if strings.EqualFold(m[3], c) {
				ok = true
			}
		}
	}
	if !ok {
		h.err.writeError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "unsupported query " + strconv.Quote(q.Query) + `: dps supports "*", "SELECT *" and "SELECT * FROM ` + collections[0] + `"`})
		return false
	}
	return true
}

// page reads the paging headers.
func (h *ServiceHandler) page(r *http.Request) (continuation string, limit int, err error) {
	limit = h.o.MaxPageSize
	if v := r.Header.Get("x-ms-max-item-count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return "", 0, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "x-ms-max-item-count must be a positive integer"}
		}
		limit = min(n, h.o.MaxPageSize)
	}
	return r.Header.Get("x-ms-continuation"), limit, nil
}

func writePage(w http.ResponseWriter, r *http.Request, itemType, next string, limit int, items any) {
	w.Header().Set("x-ms-item-type", itemType)
	if r.Header.Get("x-ms-max-item-count") != "" {
		w.Header().Set("x-ms-max-item-count", strconv.Itoa(limit))
	}
	if next != "" {
		w.Header().Set("x-ms-continuation", next)
	}
	writeJSON(w, http.StatusOK, items)
}

func (h *ServiceHandler) query(w http.ResponseWriter, r *http.Request, _ []string) {
	cont, limit, err := h.page(r)
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	if groups(r) {
		if !h.checkQuery(w, r, false, "enrollmentGroups") {
			return
		}
		gs, next, err := h.o.Manager.Groups(r.Context(), cont, limit)
		if err != nil {
			h.err.writeError(w, r, err)
			return
		}
		mayWrite := h.mayWrite(r)
		out := make([]wire.EnrollmentGroup, len(gs))
		for i, g := range gs {
			out[i] = readGroupOut(g, mayWrite)
		}
		writePage(w, r, "EnrollmentGroup", next, limit, out)
		return
	}
	if !h.checkQuery(w, r, false, "enrollments") {
		return
	}
	es, next, err := h.o.Manager.Enrollments(r.Context(), cont, limit)
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	mayWrite := h.mayWrite(r)
	out := make([]wire.IndividualEnrollment, len(es))
	for i, e := range es {
		out[i] = h.readOut(r.Context(), e, mayWrite)
	}
	writePage(w, r, "Enrollment", next, limit, out)
}

func (h *ServiceHandler) getRegistration(w http.ResponseWriter, r *http.Request, ids []string) {
	reg, err := h.o.Manager.Registration(r.Context(), ids[0])
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.FromRegistrationState(reg))
}

func (h *ServiceHandler) deleteRegistration(w http.ResponseWriter, r *http.Request, ids []string) {
	if err := h.o.Manager.DeleteRegistration(r.Context(), ids[0], ifMatch(r)); err != nil {
		h.err.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *ServiceHandler) queryRegistrations(w http.ResponseWriter, r *http.Request, ids []string) {
	cont, limit, err := h.page(r)
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	if !h.checkQuery(w, r, true, "registrations", "enrollments", "enrollmentGroups") {
		return
	}
	regs, next, err := h.o.Manager.Registrations(r.Context(), ids[0], cont, limit)
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	out := make([]*wire.DeviceRegistrationState, len(regs))
	for i, reg := range regs {
		out[i] = wire.FromRegistrationState(reg)
	}
	writePage(w, r, "DeviceRegistration", next, limit, out)
}

func (h *ServiceHandler) writeCA(w http.ResponseWriter, r *http.Request, c dps.CACertificate, err error) {
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.FromCA(c))
}

func (h *ServiceHandler) listCAs(w http.ResponseWriter, r *http.Request, _ []string) {
	cs, err := h.o.Manager.CAs(r.Context())
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	out := make([]wire.CACertificate, len(cs))
	for i, c := range cs {
		out[i] = wire.FromCA(c)
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *ServiceHandler) getCA(w http.ResponseWriter, r *http.Request, ids []string) {
	c, err := h.o.Manager.CA(r.Context(), ids[0])
	h.writeCA(w, r, c, err)
}

func (h *ServiceHandler) putCA(w http.ResponseWriter, r *http.Request, ids []string) {
	var body wire.CACertificate
	if err := readJSON(w, r, &body, false); err != nil {
		h.err.writeError(w, r, err)
		return
	}
	c, err := h.o.Manager.PutCA(r.Context(), ids[0], body.Certificate, ifMatch(r))
	h.writeCA(w, r, c, err)
}

func (h *ServiceHandler) deleteCA(w http.ResponseWriter, r *http.Request, ids []string) {
	if err := h.o.Manager.DeleteCA(r.Context(), ids[0], ifMatch(r)); err != nil {
		h.err.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *ServiceHandler) generateCode(w http.ResponseWriter, r *http.Request, ids []string) {
	c, err := h.o.Manager.GenerateVerificationCode(r.Context(), ids[0])
	h.writeCA(w, r, c, err)
}

func (h *ServiceHandler) verifyCA(w http.ResponseWriter, r *http.Request, ids []string) {
	var body wire.CACertificate
	if err := readJSON(w, r, &body, false); err != nil {
		h.err.writeError(w, r, err)
		return
	}
	c, err := h.o.Manager.VerifyCA(r.Context(), ids[0], body.Certificate, h.o.Now())
	h.writeCA(w, r, c, err)
}
