package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/wire"
)

// Issuance is certificate issuance as the service API manages it
// (internal/issuance): issuing CAs, credential policies and each CA's CRL.
type Issuance interface {
	PutCA(ctx context.Context, name string, spec dps.CASpec, ifMatch string) (dps.IssuingCA, error)
	CA(ctx context.Context, name string) (dps.IssuingCA, error)
	CAs(ctx context.Context) ([]dps.IssuingCA, error)
	DeleteCA(ctx context.Context, name, ifMatch string) error
	PutPolicy(ctx context.Context, p dps.CredentialPolicy, ifMatch string) (dps.CredentialPolicy, error)
	Policy(ctx context.Context, name string) (dps.CredentialPolicy, error)
	Policies(ctx context.Context) ([]dps.CredentialPolicy, error)
	DeletePolicy(ctx context.Context, name, ifMatch string) error
	CRL(ctx context.Context, name string) ([]byte, error)
}

// public marks a route that needs no token: a CA's CRL, which relying
// parties fetch from the URL in the certificates.
const public access.Right = ""

// issuanceRoutes are the routes of /certificateAuthorities and
// /credentialPolicies (ServiceConfig), and the CRL (public).
func (h *ServiceHandler) issuanceRoutes(segs []string) ([]route, []string, bool) {
	if h.o.Issuance == nil {
		return nil, nil, false
	}
	switch kind := strings.ToLower(segs[0]); {
	case kind == "certificateauthorities" && len(segs) == 1:
		return []route{{http.MethodGet, access.ServiceConfig, h.listIssuingCAs}}, nil, true
	case kind == "certificateauthorities" && len(segs) == 2:
		return []route{
			{http.MethodGet, access.ServiceConfig, h.getIssuingCA},
			{http.MethodPut, access.ServiceConfig, h.putIssuingCA},
			{http.MethodDelete, access.ServiceConfig, h.deleteIssuingCA},
		}, segs[1:], true
	case kind == "certificateauthorities" && len(segs) == 3 && strings.EqualFold(segs[2], "crl"):
		return []route{{http.MethodGet, public, h.crl}}, segs[1:2], true
	case kind == "credentialpolicies" && len(segs) == 1:
		return []route{{http.MethodGet, access.ServiceConfig, h.listPolicies}}, nil, true
	case kind == "credentialpolicies" && len(segs) == 2:
		return []route{
			{http.MethodGet, access.ServiceConfig, h.getPolicy},
			{http.MethodPut, access.ServiceConfig, h.putPolicy},
			{http.MethodDelete, access.ServiceConfig, h.deletePolicy},
		}, segs[1:], true
	}
	return nil, nil, false
}

func (h *ServiceHandler) listIssuingCAs(w http.ResponseWriter, r *http.Request, _ []string) {
	cs, err := h.o.Issuance.CAs(r.Context())
	writeList(h, w, r, cs, err, wire.FromIssuingCA)
}

func (h *ServiceHandler) getIssuingCA(w http.ResponseWriter, r *http.Request, ids []string) {
	c, err := h.o.Issuance.CA(r.Context(), ids[0])
	writeOne(h, w, r, c, err, wire.FromIssuingCA)
}

func (h *ServiceHandler) putIssuingCA(w http.ResponseWriter, r *http.Request, ids []string) {
	var body wire.IssuingCA
	if !h.readNamed(w, r, &body, &body.Name, ids[0]) {
		return
	}
	req := dps.CASpec{Subject: body.Subject, ValidityDays: body.ValidityDays, CertificatePEM: body.Certificate, KeyPEM: body.Key}
	if body.KeyType != "" {
		k, err := dps.ParseKeyType(body.KeyType)
		if err != nil {
			h.err.writeError(w, r, err)
			return
		}
		req.KeyType = k
	}
	c, err := h.o.Issuance.PutCA(r.Context(), ids[0], req, ifMatch(r))
	writeOne(h, w, r, c, err, wire.FromIssuingCA)
}

func (h *ServiceHandler) deleteIssuingCA(w http.ResponseWriter, r *http.Request, ids []string) {
	h.writeDeleted(w, r, h.o.Issuance.DeleteCA(r.Context(), ids[0], ifMatch(r)))
}

// crl answers a CA's CRL, DER (application/pkix-crl), to anyone.
func (h *ServiceHandler) crl(w http.ResponseWriter, r *http.Request, ids []string) {
	der, err := h.o.Issuance.CRL(r.Context(), ids[0])
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Content-Length", strconv.Itoa(len(der)))
	w.Header().Set("Cache-Control", "max-age=30")
	w.WriteHeader(http.StatusOK)
	w.Write(der)
}

func (h *ServiceHandler) listPolicies(w http.ResponseWriter, r *http.Request, _ []string) {
	ps, err := h.o.Issuance.Policies(r.Context())
	writeList(h, w, r, ps, err, wire.FromCredentialPolicy)
}

func (h *ServiceHandler) getPolicy(w http.ResponseWriter, r *http.Request, ids []string) {
	p, err := h.o.Issuance.Policy(r.Context(), ids[0])
	writeOne(h, w, r, p, err, wire.FromCredentialPolicy)
}

func (h *ServiceHandler) putPolicy(w http.ResponseWriter, r *http.Request, ids []string) {
	var body wire.CredentialPolicy
	if !h.readNamed(w, r, &body, &body.Name, ids[0]) {
		return
	}
	body.Name = ids[0]
	p, err := h.o.Issuance.PutPolicy(r.Context(), wire.ToCredentialPolicy(body), ifMatch(r))
	writeOne(h, w, r, p, err, wire.FromCredentialPolicy)
}

func (h *ServiceHandler) deletePolicy(w http.ResponseWriter, r *http.Request, ids []string) {
	h.writeDeleted(w, r, h.o.Issuance.DeletePolicy(r.Context(), ids[0], ifMatch(r)))
}

// readNamed reads a PUT body whose name member (*name once read), when
// given, must be the path's name (any case): false when it answered an
// error.
func (h *ServiceHandler) readNamed(w http.ResponseWriter, r *http.Request, body any, name *string, path string) bool {
	if err := readJSON(w, r, body, false); err != nil {
		h.err.writeError(w, r, err)
		return false
	}
	if *name != "" && !strings.EqualFold(*name, path) {
		h.err.writeError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "name in the body does not match the path"})
		return false
	}
	return true
}

// writeOne answers v in its wire form (200), or err.
func writeOne[T, W any](h *ServiceHandler, w http.ResponseWriter, r *http.Request, v T, err error, toWire func(T) W) {
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toWire(v))
}

// writeList answers vs in their wire form as a JSON array (200), or err.
func writeList[T, W any](h *ServiceHandler, w http.ResponseWriter, r *http.Request, vs []T, err error, toWire func(T) W) {
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	out := make([]W, len(vs))
	for i, v := range vs {
		out[i] = toWire(v)
	}
	writeJSON(w, http.StatusOK, out)
}

// writeDeleted answers 204 No Content, or err.
func (h *ServiceHandler) writeDeleted(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
