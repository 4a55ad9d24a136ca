package console

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/wire"
)

// pageSize is how many rows a list page shows (at least; a filtered
// list may show up to twice as many).
const pageSize = 25

// scanBudget bounds how many items one filtered list page reads.
const scanBudget = 2000

// scan reads pages of up to want items from cont on, keeping those that
// pass keep, until it kept want, read scanBudget or reached the end. It
// returns what it kept and where to go on ("" at the end).
func scan[T any](want int, cont string, read func(cont string, limit int) ([]T, string, error), keep func(T) bool) ([]T, string, error) {
	var out []T
	for n := 0; ; {
		items, next, err := read(cont, want)
		if err != nil {
			return nil, "", err
		}
		for _, it := range items {
			if keep(it) {
				out = append(out, it)
			}
		}
		n += len(items)
		cont = next
		if cont == "" || len(out) >= want || n >= scanBudget {
			return out, cont, nil
		}
	}
}

// contains reports whether id contains the search text q, in any case.
func contains(id, q string) bool {
	return q == "" || strings.Contains(strings.ToLower(id), strings.ToLower(strings.TrimSpace(q)))
}

// enrollmentRow is a row of the enrollments list.
type enrollmentRow struct {
	E   dps.Enrollment
	Reg *dps.Registration
}

type listData struct {
	Q, Next, Cursor string
	Rows            any
}

func (h *Handler) enrollments(w http.ResponseWriter, r *http.Request, s *session) {
	q, cursor := r.URL.Query().Get("q"), r.URL.Query().Get("cursor")
	es, next, err := scan(pageSize, cursor, func(c string, n int) ([]dps.Enrollment, string, error) {
		return h.o.Manager.Enrollments(r.Context(), c, n)
	}, func(e dps.Enrollment) bool {
		return contains(e.RegistrationID, q) || contains(e.DeviceID, q) && e.DeviceID != ""
	})
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	rows := make([]enrollmentRow, len(es))
	for i, e := range es {
		rows[i].E = e
		if reg, err := h.o.Manager.Registration(r.Context(), e.RegistrationID); err == nil {
			rows[i].Reg = &reg
		}
	}
	h.render(w, r, s, http.StatusOK, "enrollments", page{Title: "Enrollments", Section: "enrollments",
		Data: listData{Q: q, Next: next, Cursor: cursor, Rows: rows}})
}

func (h *Handler) groups(w http.ResponseWriter, r *http.Request, s *session) {
	q, cursor := r.URL.Query().Get("q"), r.URL.Query().Get("cursor")
	gs, next, err := scan(pageSize, cursor, func(c string, n int) ([]dps.Group, string, error) {
		return h.o.Manager.Groups(r.Context(), c, n)
	}, func(g dps.Group) bool { return contains(g.ID, q) })
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.render(w, r, s, http.StatusOK, "groups", page{Title: "Enrollment groups", Section: "groups",
		Data: listData{Q: q, Next: next, Cursor: cursor, Rows: gs}})
}

// certInfo describes a certificate for display (nil when it does not
// parse).
func certInfo(c string) *dps.CertificateInfo {
	if c == "" {
		return nil
	}
	x, err := dps.ParseCertificate(c)
	if err != nil {
		return nil
	}
	info := dps.InfoOf(x)
	return &info
}

// detailData is an enrollment's or a group's page.
type detailData struct {
	Group    bool
	ID       string
	DeviceID string
	Settings dps.Settings
	// Webhook is the custom allocation URL, its query (a function key)
	// and user info masked unless the user revealed them (as the keys:
	// EnrollmentWrite and an explicit reveal); WebhookMasked says it was.
	Webhook       string
	WebhookMasked bool
	Reg           *dps.Registration
	ShowKeys      bool
	// Certs are the attestation's certificates, described.
	Certs []namedCert
	// Derived is a device key derived from the group's keys.
	Derived *derived
	// DeviceInfo is an individual enrollment's optional device
	// information.
	DeviceInfo json.RawMessage
}

type namedCert struct {
	Name string
	Info *dps.CertificateInfo
}

type derived struct {
	RegistrationID     string
	Primary, Secondary string
}

func describeCerts(a dps.Attestation) []namedCert {
	var out []namedCert
	if a.X509 == nil {
		return nil
	}
	add := func(name string, c *dps.X509Certificates) {
		if c == nil {
			return
		}
		if c.Primary != "" {
			out = append(out, namedCert{name + " (primary)", certInfo(c.Primary)})
		}
		if c.Secondary != "" {
			out = append(out, namedCert{name + " (secondary)", certInfo(c.Secondary)})
		}
	}
	add("Client certificate", a.X509.ClientCertificates)
	add("Signing certificate", a.X509.SigningCertificates)
	return out
}

// webhookShown is the custom allocation URL of set as a detail page
// shows it: masked (wire.MaskURL) unless reveal (the reveal route, which
// needs EnrollmentWrite) — and whether it is masked.
func (h *Handler) webhookShown(s *session, set dps.Settings, reveal bool) (string, bool) {
	if set.CustomAllocation == nil {
		return "", false
	}
	raw := set.CustomAllocation.WebhookURL
	if reveal && s.has("", access.EnrollmentWrite) {
		return raw, false
	}
	m := wire.MaskURL(raw)
	return m, m != raw
}

func (h *Handler) enrollmentDetail(w http.ResponseWriter, r *http.Request, s *session, showKeys bool) {
	e, err := h.o.Manager.Enrollment(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	d := detailData{ID: e.RegistrationID, DeviceID: e.DeviceID, Settings: e.Settings,
		ShowKeys: showKeys, Certs: describeCerts(e.Attestation), DeviceInfo: e.OptionalDeviceInformation}
	d.Webhook, d.WebhookMasked = h.webhookShown(s, e.Settings, showKeys)
	if reg, err := h.o.Manager.Registration(r.Context(), e.RegistrationID); err == nil {
		d.Reg = &reg
	}
	h.render(w, r, s, http.StatusOK, "detail", page{Title: "Enrollment " + e.RegistrationID, Section: "enrollments", Data: d})
}

func (h *Handler) enrollment(w http.ResponseWriter, r *http.Request, s *session) {
	h.enrollmentDetail(w, r, s, false)
}

func (h *Handler) revealEnrollmentKeys(w http.ResponseWriter, r *http.Request, s *session) {
	h.o.Logger.Info("console: enrollment keys revealed", "enrollment", r.PathValue("id"), "policy", s.policy(""), "source", source(r))
	h.enrollmentDetail(w, r, s, true)
}

func (h *Handler) groupDetail(w http.ResponseWriter, r *http.Request, s *session, showKeys bool, d *derived) {
	g, err := h.o.Manager.Group(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	data := detailData{Group: true, ID: g.ID, Settings: g.Settings,
		ShowKeys: showKeys, Certs: describeCerts(g.Attestation), Derived: d}
	data.Webhook, data.WebhookMasked = h.webhookShown(s, g.Settings, showKeys)
	h.render(w, r, s, http.StatusOK, "detail", page{Title: "Enrollment group " + g.ID, Section: "groups", Data: data})
}

func (h *Handler) group(w http.ResponseWriter, r *http.Request, s *session) {
	h.groupDetail(w, r, s, false, nil)
}

func (h *Handler) revealGroupKeys(w http.ResponseWriter, r *http.Request, s *session) {
	h.o.Logger.Info("console: group keys revealed", "group", r.PathValue("id"), "policy", s.policy(""), "source", source(r))
	h.groupDetail(w, r, s, true, nil)
}

// deriveKey shows the device key of a registration ID in a symmetric-key
// group: HMAC-SHA256 of it with the group's key, as devices derive it.
func (h *Handler) deriveKey(w http.ResponseWriter, r *http.Request, s *session) {
	g, err := h.o.Manager.Group(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	regID := strings.TrimSpace(r.PostFormValue("registrationId"))
	if err := dps.ValidateRegistrationID(regID); err != nil {
		h.fail(w, r, s, err)
		return
	}
	sk := g.Attestation.SymmetricKey
	if g.Attestation.Type != dps.AttestationSymmetricKey || sk == nil {
		h.fail(w, r, s, dps.Errorf(dps.KindInvalid, "the group %q does not use symmetric keys", g.ID))
		return
	}
	d := &derived{RegistrationID: regID}
	if k, err := sas.DecodeKey(string(sk.PrimaryKey)); err == nil {
		d.Primary = base64.StdEncoding.EncodeToString(sas.DeriveKey(k, regID))
	}
	if k, err := sas.DecodeKey(string(sk.SecondaryKey)); err == nil && sk.SecondaryKey != "" {
		d.Secondary = base64.StdEncoding.EncodeToString(sas.DeriveKey(k, regID))
	}
	h.o.Logger.Info("console: device key derived", "group", g.ID, "registration_id", regID, "policy", s.policy(""), "source", source(r))
	h.groupDetail(w, r, s, false, d)
}

// enrollmentForm is the create and edit form of enrollments and groups,
// as the user filled it in (shown again with an error when it does not
// validate).
type enrollmentForm struct {
	Group, New                     bool
	ID, DeviceID                   string
	Attestation                    string // symmetricKey, x509, tpm (create only)
	PrimaryKey, SecondaryKey       string
	Certificate, CAReference       string
	EndorsementKey, StorageRootKey string
	Enabled, Edge                  bool
	Hubs                           map[string]bool
	AllocationPolicy               string
	WebhookURL, APIVersion         string
	Reprovision                    string
	InitialTwin                    string
	ETag                           string
	LinkedHubs                     []string
}

// Reprovision choices, as the Azure portal names them.
const (
	reprovisionMigrate = "migrate" // re-provision and migrate data (the default)
	reprovisionReset   = "reset"   // re-provision and reset to the initial config
	reprovisionNever   = "never"   // never re-provision
)

func (h *Handler) linkedHubNames() []string {
	out := make([]string, len(h.o.LinkedHubs))
	for i, l := range h.o.LinkedHubs {
		out[i] = l.HostName
	}
	return out
}

// formOf fills the form from stored settings (an edit).
func (h *Handler) formOf(group bool, id, deviceID string, set dps.Settings) enrollmentForm {
	f := enrollmentForm{Group: group, ID: id, DeviceID: deviceID, Attestation: string(set.Attestation.Type),
		Enabled: set.Enabled(), Edge: set.IoTEdge, Hubs: map[string]bool{}, AllocationPolicy: string(set.AllocationPolicy),
		InitialTwin: prettyJSON(set.InitialTwin), ETag: set.ETag, LinkedHubs: h.linkedHubNames()}
	for _, hub := range set.IoTHubs {
		f.Hubs[strings.ToLower(hub)] = true
	}
	if set.IoTHubHostName != "" && len(set.IoTHubs) == 0 {
		f.Hubs[strings.ToLower(set.IoTHubHostName)] = true
	}
	if ca := set.CustomAllocation; ca != nil {
		f.WebhookURL, f.APIVersion = ca.WebhookURL, ca.APIVersion
	}
	rp := set.Reprovision()
	switch {
	case !rp.UpdateHubAssignment:
		f.Reprovision = reprovisionNever
	case !rp.MigrateDeviceData:
		f.Reprovision = reprovisionReset
	default:
		f.Reprovision = reprovisionMigrate
	}
	return f
}

// readForm reads the form as posted.
func (h *Handler) readForm(r *http.Request, group, isNew bool) enrollmentForm {
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	f := enrollmentForm{Group: group, New: isNew, ID: v("id"), DeviceID: v("deviceId"), Attestation: v("attestation"),
		PrimaryKey: v("primaryKey"), SecondaryKey: v("secondaryKey"), Certificate: v("certificate"), CAReference: v("caReference"),
		EndorsementKey: v("endorsementKey"), StorageRootKey: v("storageRootKey"),
		Enabled: r.PostFormValue("enabled") != "", Edge: r.PostFormValue("iotEdge") != "", Hubs: map[string]bool{},
		AllocationPolicy: v("allocationPolicy"), WebhookURL: v("webhookUrl"), APIVersion: v("apiVersion"),
		Reprovision: v("reprovision"), InitialTwin: v("initialTwin"), ETag: v("etag"), LinkedHubs: h.linkedHubNames()}
	for _, hub := range r.PostForm["hub"] {
		f.Hubs[strings.ToLower(hub)] = true
	}
	return f
}

// settings applies the form to base (the stored settings of an edit, the
// zero value of a create). The use case validates the result.
func (f enrollmentForm) settings(base dps.Settings) (dps.Settings, error) {
	set := base
	if f.New {
		switch dps.AttestationType(f.Attestation) {
		case dps.AttestationSymmetricKey, "":
			set.Attestation = dps.Attestation{Type: dps.AttestationSymmetricKey,
				SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: dps.Key(f.PrimaryKey), SecondaryKey: dps.Key(f.SecondaryKey)}}
		case dps.AttestationX509:
			x := &dps.X509Attestation{}
			switch {
			case f.Group && f.CAReference != "":
				x.CAReferences = &dps.X509CAReferences{Primary: f.CAReference}
			case f.Group:
				x.SigningCertificates = &dps.X509Certificates{Primary: f.Certificate}
			default:
				x.ClientCertificates = &dps.X509Certificates{Primary: f.Certificate}
			}
			set.Attestation = dps.Attestation{Type: dps.AttestationX509, X509: x}
		case dps.AttestationTPM:
			if f.Group {
				return set, dps.Errorf(dps.KindInvalid, "enrollment groups do not support TPM attestation")
			}
			set.Attestation = dps.Attestation{Type: dps.AttestationTPM, TPM: &dps.TPMAttestation{EndorsementKey: f.EndorsementKey, StorageRootKey: f.StorageRootKey}}
		default:
			return set, dps.Errorf(dps.KindInvalid, "attestation %q: choose symmetric key, X.509 or TPM", f.Attestation)
		}
	}
	set.ProvisioningStatus = dps.ProvisioningDisabled
	if f.Enabled {
		set.ProvisioningStatus = dps.ProvisioningEnabled
	}
	set.IoTEdge = f.Edge
	set.IoTHubHostName = ""
	set.IoTHubs = nil
	for _, hub := range f.LinkedHubs {
		if f.Hubs[strings.ToLower(hub)] {
			set.IoTHubs = append(set.IoTHubs, hub)
		}
	}
	set.AllocationPolicy = ""
	set.CustomAllocation = nil
	if f.AllocationPolicy != "" {
		p, err := dps.ParseAllocationPolicy(f.AllocationPolicy)
		if err != nil {
			return set, err
		}
		set.AllocationPolicy = p
		if p == dps.AllocationCustom {
			ca := &dps.CustomAllocation{WebhookURL: f.WebhookURL, APIVersion: f.APIVersion}
			if base.CustomAllocation != nil {
				ca.SigningSecret = base.CustomAllocation.SigningSecret
			}
			set.CustomAllocation = ca
		}
	}
	switch f.Reprovision {
	case reprovisionNever:
		set.ReprovisionPolicy = &dps.ReprovisionPolicy{}
	case reprovisionReset:
		set.ReprovisionPolicy = &dps.ReprovisionPolicy{UpdateHubAssignment: true}
	default:
		set.ReprovisionPolicy = &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}
	}
	set.InitialTwin = nil
	if f.InitialTwin != "" {
		var buf bytes.Buffer
		if err := json.Compact(&buf, []byte(f.InitialTwin)); err != nil {
			return set, dps.Errorf(dps.KindInvalid, "the initial twin is not valid JSON: %v", err)
		}
		set.InitialTwin = buf.Bytes()
	}
	return set, nil
}

func (h *Handler) showForm(w http.ResponseWriter, r *http.Request, s *session, status int, f enrollmentForm, msg string) {
	title, section := "Enrollment", "enrollments"
	if f.Group {
		title, section = "Enrollment group", "groups"
	}
	if f.New {
		title = "New " + strings.ToLower(title)
	} else {
		title = "Edit " + strings.ToLower(title) + " " + f.ID
	}
	h.render(w, r, s, status, "form", page{Title: title, Section: section, Error: msg, Data: f})
}

func (h *Handler) newEnrollment(w http.ResponseWriter, r *http.Request, s *session) {
	h.showForm(w, r, s, http.StatusOK, enrollmentForm{New: true, Attestation: "symmetricKey", Enabled: true, Hubs: map[string]bool{},
		Reprovision: reprovisionMigrate, LinkedHubs: h.linkedHubNames()}, "")
}

func (h *Handler) newGroup(w http.ResponseWriter, r *http.Request, s *session) {
	h.showForm(w, r, s, http.StatusOK, enrollmentForm{Group: true, New: true, Attestation: "symmetricKey", Enabled: true, Hubs: map[string]bool{},
		Reprovision: reprovisionMigrate, LinkedHubs: h.linkedHubNames()}, "")
}

// formFailed shows the form again with the use case's error.
func (h *Handler) formFailed(w http.ResponseWriter, r *http.Request, s *session, f enrollmentForm, err error) {
	status, msg := h.errorStatus(r, err)
	h.showForm(w, r, s, status, f, msg)
}

func (h *Handler) createEnrollment(w http.ResponseWriter, r *http.Request, s *session) {
	f := h.readForm(r, false, true)
	set, err := f.settings(dps.Settings{})
	if err == nil {
		e := dps.Enrollment{RegistrationID: f.ID, DeviceID: f.DeviceID, Settings: set}
		e, err = h.o.Manager.PutEnrollment(r.Context(), e, "")
		if err == nil {
			h.done(w, r, s, "/console/enrollment/"+url.PathEscape(e.RegistrationID), "Enrollment "+e.RegistrationID+" created.")
			return
		}
	}
	h.formFailed(w, r, s, f, err)
}

func (h *Handler) createGroup(w http.ResponseWriter, r *http.Request, s *session) {
	f := h.readForm(r, true, true)
	set, err := f.settings(dps.Settings{})
	if err == nil {
		g := dps.Group{ID: f.ID, Settings: set}
		g, err = h.o.Manager.PutGroup(r.Context(), g, "")
		if err == nil {
			h.done(w, r, s, "/console/group/"+url.PathEscape(g.ID), "Enrollment group "+g.ID+" created.")
			return
		}
	}
	h.formFailed(w, r, s, f, err)
}

func (h *Handler) editEnrollment(w http.ResponseWriter, r *http.Request, s *session) {
	e, err := h.o.Manager.Enrollment(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.showForm(w, r, s, http.StatusOK, h.formOf(false, e.RegistrationID, e.DeviceID, e.Settings), "")
}

func (h *Handler) editGroup(w http.ResponseWriter, r *http.Request, s *session) {
	g, err := h.o.Manager.Group(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.showForm(w, r, s, http.StatusOK, h.formOf(true, g.ID, "", g.Settings), "")
}

// updateEnrollment applies the edit form to the enrollment as stored,
// if it did not change since the form was read (its ETag).
func (h *Handler) updateEnrollment(w http.ResponseWriter, r *http.Request, s *session) {
	e, err := h.o.Manager.Enrollment(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	f := h.readForm(r, false, false)
	f.ID, f.Attestation = e.RegistrationID, string(e.Attestation.Type)
	set, err := f.settings(e.Settings)
	if err == nil {
		e.DeviceID, e.Settings = f.DeviceID, set
		if _, err = h.o.Manager.PutEnrollment(r.Context(), e, f.ETag); err == nil {
			h.done(w, r, s, "/console/enrollment/"+url.PathEscape(e.RegistrationID), "Enrollment "+e.RegistrationID+" saved.")
			return
		}
	}
	h.formFailed(w, r, s, f, err)
}

func (h *Handler) updateGroup(w http.ResponseWriter, r *http.Request, s *session) {
	g, err := h.o.Manager.Group(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	f := h.readForm(r, true, false)
	f.ID, f.Attestation = g.ID, string(g.Attestation.Type)
	set, err := f.settings(g.Settings)
	if err == nil {
		g.Settings = set
		if _, err = h.o.Manager.PutGroup(r.Context(), g, f.ETag); err == nil {
			h.done(w, r, s, "/console/group/"+url.PathEscape(g.ID), "Enrollment group "+g.ID+" saved.")
			return
		}
	}
	h.formFailed(w, r, s, f, err)
}

// status reads the enable/disable form: the new status.
func status(r *http.Request) dps.ProvisioningStatus {
	if r.PostFormValue("enabled") == "true" {
		return dps.ProvisioningEnabled
	}
	return dps.ProvisioningDisabled
}

func statusWord(p dps.ProvisioningStatus) string {
	if p == dps.ProvisioningDisabled {
		return "disabled"
	}
	return "enabled"
}

func (h *Handler) setEnrollmentStatus(w http.ResponseWriter, r *http.Request, s *session) {
	e, err := h.o.Manager.Enrollment(r.Context(), r.PathValue("id"))
	if err == nil {
		e.ProvisioningStatus = status(r)
		_, err = h.o.Manager.PutEnrollment(r.Context(), e, e.ETag)
	}
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.done(w, r, s, "/console/enrollment/"+url.PathEscape(e.RegistrationID), "Enrollment "+e.RegistrationID+" "+statusWord(e.ProvisioningStatus)+".")
}

func (h *Handler) setGroupStatus(w http.ResponseWriter, r *http.Request, s *session) {
	g, err := h.o.Manager.Group(r.Context(), r.PathValue("id"))
	if err == nil {
		g.ProvisioningStatus = status(r)
		_, err = h.o.Manager.PutGroup(r.Context(), g, g.ETag)
	}
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.done(w, r, s, "/console/group/"+url.PathEscape(g.ID), "Enrollment group "+g.ID+" "+statusWord(g.ProvisioningStatus)+".")
}

func (h *Handler) deleteEnrollment(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if err := h.o.Manager.DeleteEnrollment(r.Context(), id, r.PostFormValue("etag")); err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.done(w, r, s, "/console/enrollments", "Enrollment "+id+" deleted.")
}

func (h *Handler) deleteGroup(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if err := h.o.Manager.DeleteGroup(r.Context(), id, r.PostFormValue("etag")); err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.done(w, r, s, "/console/groups", "Enrollment group "+id+" deleted.")
}
