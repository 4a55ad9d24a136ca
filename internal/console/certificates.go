package console

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/faults"
)

// CA certificates (ServiceConfig): add one, then prove possession of its
// key — generate a verification code, sign a certificate whose CN is the
// code with the CA's key, upload it — and groups can name it.

type caRow struct {
	CA   dps.CACertificate
	Info *dps.CertificateInfo
}

type certificatesData struct {
	Rows       []caRow
	Name, Cert string // the add form as sent
}

func (h *Handler) certificates(w http.ResponseWriter, r *http.Request, s *session) {
	h.showCertificates(w, r, s, http.StatusOK, "", certificatesData{})
}

func (h *Handler) showCertificates(w http.ResponseWriter, r *http.Request, s *session, status int, msg string, d certificatesData) {
	cas, err := h.o.Manager.CAs(r.Context())
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	for _, c := range cas {
		d.Rows = append(d.Rows, caRow{CA: c, Info: certInfo(c.Certificate)})
	}
	h.render(w, r, s, status, "certificates", page{Title: "CA certificates", Section: "certificates", Error: msg, Data: d})
}

func (h *Handler) addCertificate(w http.ResponseWriter, r *http.Request, s *session) {
	d := certificatesData{Name: strings.TrimSpace(r.PostFormValue("name")), Cert: strings.TrimSpace(r.PostFormValue("certificate"))}
	c, err := h.o.Manager.PutCA(r.Context(), d.Name, d.Cert, "")
	if err != nil {
		status, msg := h.errorStatus(r, err)
		h.showCertificates(w, r, s, status, msg, d)
		return
	}
	h.done(w, r, s, "/console/certificate/"+url.PathEscape(c.Name), "CA certificate "+c.Name+" added. Prove possession of its key to use it.")
}

type certificateData struct {
	CA    dps.CACertificate
	Info  *dps.CertificateInfo
	Proof string // the verification form as sent
}

func (h *Handler) showCertificate(w http.ResponseWriter, r *http.Request, s *session, status int, msg, proof string) {
	c, err := h.o.Manager.CA(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.render(w, r, s, status, "certificate", page{Title: "CA certificate " + c.Name, Section: "certificates", Error: msg,
		Data: certificateData{CA: c, Info: certInfo(c.Certificate), Proof: proof}})
}

func (h *Handler) certificate(w http.ResponseWriter, r *http.Request, s *session) {
	h.showCertificate(w, r, s, http.StatusOK, "", "")
}

func (h *Handler) generateCode(w http.ResponseWriter, r *http.Request, s *session) {
	c, err := h.o.Manager.GenerateVerificationCode(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.done(w, r, s, "/console/certificate/"+url.PathEscape(c.Name), "Verification code generated.")
}

func (h *Handler) verifyCertificate(w http.ResponseWriter, r *http.Request, s *session) {
	proof := strings.TrimSpace(r.PostFormValue("certificate"))
	c, err := h.o.Manager.VerifyCA(r.Context(), r.PathValue("name"), proof, h.o.Now())
	if err != nil {
		status, msg := h.errorStatus(r, err)
		h.showCertificate(w, r, s, status, msg, proof)
		return
	}
	h.done(w, r, s, "/console/certificate/"+url.PathEscape(c.Name), "CA certificate "+c.Name+" verified: enrollment groups may name it now.")
}

func (h *Handler) deleteCertificate(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	if err := h.o.Manager.DeleteCA(r.Context(), name, r.PostFormValue("etag")); err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.done(w, r, s, "/console/certificates", "CA certificate "+name+" deleted.")
}

// Fault injection rules (ServiceConfig), as PUT /faults/{name} takes them.

type faultForm struct {
	Name, RegistrationID, Group, Enrollment, Transport, Operation string
	Action, Value, ErrorCode, RetryAfter, Times, Probability      string
}

type faultsData struct {
	Off   bool
	Rules []faults.Status
	Form  faultForm
}

func (h *Handler) faultRules(w http.ResponseWriter, r *http.Request, s *session) {
	h.showFaults(w, r, s, http.StatusOK, "", faultForm{Action: "status", Value: "503", RetryAfter: "5"})
}

func (h *Handler) showFaults(w http.ResponseWriter, r *http.Request, s *session, status int, msg string, f faultForm) {
	d := faultsData{Off: h.o.Faults == nil, Form: f}
	if !d.Off {
		d.Rules = h.o.Faults.List()
	}
	h.render(w, r, s, status, "faults", page{Title: "Fault injection", Section: "faults", Error: msg, Data: d})
}

// atoi reads a whole number field ("" is 0).
func atoi(s string) (int, bool) {
	if s == "" {
		return 0, true
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

func (f faultForm) rule() (faults.Rule, string) {
	rule := faults.Rule{Name: f.Name, Match: faults.Match{RegistrationID: f.RegistrationID, Group: f.Group, Enrollment: f.Enrollment,
		Transport: f.Transport, Operation: f.Operation}}
	n, ok := atoi(f.Value)
	if !ok && f.Action != "drop" { // a drop's value is where it drops
		return rule, "The action's value must be a whole number."
	}
	switch f.Action {
	case "status":
		rule.Action.Status = n
		if rule.Action.ErrorCode, ok = atoi(f.ErrorCode); !ok {
			return rule, "The error code must be a whole number."
		}
		if rule.Action.RetryAfterSeconds, ok = atoi(f.RetryAfter); !ok {
			return rule, "Retry-after must be a whole number of seconds."
		}
	case "delay":
		rule.Action.DelayMs = n
	case "assigning":
		rule.Action.AssigningPolls = n
	case "drop":
		rule.Action.Drop = f.Value
		if f.Value == "" || f.Value == "0" {
			rule.Action.Drop = faults.DropBeforeResponse
		}
	default:
		return rule, "Choose an action."
	}
	if rule.Times, ok = atoi(f.Times); !ok {
		return rule, "Times must be a whole number."
	}
	if f.Probability != "" {
		p, err := strconv.ParseFloat(f.Probability, 64)
		if err != nil {
			return rule, "The probability must be a number between 0 and 1."
		}
		rule.Probability = p
	}
	return rule, ""
}

func (h *Handler) putFault(w http.ResponseWriter, r *http.Request, s *session) {
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	f := faultForm{Name: v("name"), RegistrationID: v("registrationId"), Group: v("group"), Enrollment: v("enrollment"),
		Transport: v("transport"), Operation: v("operation"), Action: v("action"), Value: v("value"),
		ErrorCode: v("errorCode"), RetryAfter: v("retryAfter"), Times: v("times"), Probability: v("probability")}
	if h.o.Faults == nil {
		h.showFaults(w, r, s, http.StatusNotFound, "Fault injection is not available on this instance.", f)
		return
	}
	rule, msg := f.rule()
	if msg == "" {
		if _, err := h.o.Faults.Put(rule); err != nil {
			msg = "Invalid fault rule: " + strings.ReplaceAll(err.Error(), "\n", "; ")
		}
	}
	if msg != "" {
		h.showFaults(w, r, s, http.StatusBadRequest, msg, f)
		return
	}
	h.o.Logger.Info("console: fault rule set", "rule", rule.Name, "policy", s.policy(""))
	h.done(w, r, s, "/console/faults", "Fault rule "+rule.Name+" set.")
}

func (h *Handler) deleteFault(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	if h.o.Faults == nil {
		h.fail(w, r, s, dps.Errorf(dps.KindNotFound, "fault injection is not available on this instance"))
		return
	}
	st, ok := h.o.Faults.Delete(name)
	if !ok {
		h.fail(w, r, s, dps.Errorf(dps.KindNotFound, "no fault rule %s", name))
		return
	}
	h.o.Logger.Info("console: fault rule deleted", "rule", st.Name, "injected", st.Injected, "policy", s.policy(""))
	h.done(w, r, s, "/console/faults", "Fault rule "+st.Name+" deleted after "+strconv.FormatInt(int64(st.Injected), 10)+" injected faults.")
}
