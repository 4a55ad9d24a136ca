package console

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
)

// The registrations list reads the records from their sources: the
// individual enrollments (one record each at most) and the enrollment
// groups (a page of records each), in that order. A cursor says where a
// page stopped.
type regCursor struct {
	Phase string `json:"p"`           // "i": individual enrollments; "g": groups
	Group string `json:"g,omitempty"` // the group being read
	Cont  string `json:"c,omitempty"` // the continuation within it
}

func (c regCursor) String() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func parseRegCursor(s string) (regCursor, bool) {
	var c regCursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &c) != nil || (c.Phase != "i" && c.Phase != "g") {
		return regCursor{}, false
	}
	return c, true
}

// individualOnly is the group filter's value for the individual
// enrollments' records.
const individualOnly = "-"

// maxGroupsListed bounds the groups the registrations page reads (for its
// filter and for listing every group's records).
const maxGroupsListed = 2000

type registrationsData struct {
	Group, Status string
	Groups        []string
	Rows          []dps.Registration
	Next          string
	Cursor        string
	Statuses      []dps.Status
}

// groupIDs lists the groups' IDs, in the store's order.
func (h *Handler) groupIDs(ctx context.Context) ([]string, error) {
	var out []string
	cont := ""
	for {
		gs, next, err := h.o.Manager.Groups(ctx, cont, 500)
		if err != nil {
			return nil, err
		}
		for _, g := range gs {
			out = append(out, g.ID)
		}
		if next == "" || len(out) >= maxGroupsListed {
			return out, nil
		}
		cont = next
	}
}

func (h *Handler) registrations(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	q := r.URL.Query()
	group, st, cursor := q.Get("group"), dps.Status(q.Get("status")), q.Get("cursor")
	groups, err := h.groupIDs(ctx)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	keep := func(reg dps.Registration) bool { return st == "" || reg.Status == st }
	cur, ok := parseRegCursor(cursor)
	if !ok {
		cur = regCursor{Phase: "i"}
		switch group {
		case "", individualOnly:
		default:
			cur = regCursor{Phase: "g", Group: group}
		}
	}
	var rows []dps.Registration
	read := 0
	for len(rows) < pageSize && read < scanBudget {
		if cur.Phase == "i" {
			es, next, err := h.o.Manager.Enrollments(ctx, cur.Cont, pageSize)
			if err != nil {
				h.fail(w, r, s, err)
				return
			}
			read += len(es)
			for _, e := range es {
				reg, err := h.o.Manager.Registration(ctx, e.RegistrationID)
				if err == nil && reg.EnrollmentGroupID == "" && keep(reg) {
					rows = append(rows, reg)
				}
			}
			cur.Cont = next
			if next == "" {
				if group == individualOnly || len(groups) == 0 {
					cur = regCursor{}
					break
				}
				cur = regCursor{Phase: "g", Group: groups[0]}
			}
			continue
		}
		regs, next, err := h.o.Manager.Registrations(ctx, cur.Group, cur.Cont, pageSize)
		if err != nil {
			h.fail(w, r, s, err)
			return
		}
		read += len(regs)
		for _, reg := range regs {
			if keep(reg) {
				rows = append(rows, reg)
			}
		}
		cur.Cont = next
		if next == "" {
			if group != "" {
				cur = regCursor{}
				break
			}
			cur = regCursor{Phase: "g", Group: nextGroup(groups, cur.Group)}
			if cur.Group == "" {
				cur = regCursor{}
				break
			}
		}
	}
	d := registrationsData{Group: group, Status: string(st), Groups: groups, Rows: rows, Cursor: cursor,
		Statuses: []dps.Status{dps.StatusAssigned, dps.StatusAssigning, dps.StatusFailed, dps.StatusDisabled, dps.StatusUnassigned}}
	if cur.Phase != "" {
		d.Next = cur.String()
	}
	h.render(w, r, s, http.StatusOK, "registrations", page{Title: "Registrations", Section: "registrations", Data: d})
}

// nextGroup returns the group after id in groups ("" after the last).
func nextGroup(groups []string, id string) string {
	for i, g := range groups {
		if strings.EqualFold(g, id) && i+1 < len(groups) {
			return groups[i+1]
		}
	}
	return ""
}

type registrationData struct {
	Reg dps.Registration
	// Events are the feed's latest events of the registration ID, newest
	// first; FeedOff says there is no feed, FeedNote why the page shows
	// none of it ("" when it does).
	Events   []dps.RegistrationEvent
	FeedOff  bool
	FeedNote string
	// DevicePayload is the payload the device sent with its latest
	// register request (from the feed).
	DevicePayload json.RawMessage
	Webhooks      []dps.RegistrationEvent
	// HubLink is the page of the device on its built-in hub ("" for a
	// remote hub).
	HubLink string
}

func (h *Handler) registration(w http.ResponseWriter, r *http.Request, s *session) {
	reg, err := h.o.Manager.Registration(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	d := registrationData{Reg: reg, FeedOff: h.o.Events == nil}
	// The feed's events hold what the registration status does not (the
	// device's source address and payload, refusal reasons, webhook
	// calls): as GET /registrationEvents, they need ServiceConfig.
	feedShown := h.o.Events != nil && s.has("", access.ServiceConfig)
	switch {
	case d.FeedOff:
		d.FeedNote = "The registration-events feed is not available on this instance."
	case !feedShown:
		d.FeedNote = "The registration-events feed needs the ServiceConfig right."
	}
	if hub, ok := h.isBuiltIn(reg.AssignedHub); ok && reg.DeviceID != "" {
		d.HubLink = deviceLink(hub, reg.DeviceID)
	}
	if feedShown {
		events, _, err := h.recentEvents(r.Context(), EventFilter{RegistrationID: reg.RegistrationID}, 30)
		if err != nil {
			h.o.Logger.WarnContext(r.Context(), "console: registration events unavailable", "err", err)
		}
		d.Events = events
		for _, e := range events { // newest first
			if e.Kind == dps.EventAccepted && d.DevicePayload == nil && len(e.Payload) > 0 {
				d.DevicePayload = e.Payload
			}
			if e.Webhook != nil {
				d.Webhooks = append(d.Webhooks, e)
			}
		}
	}
	h.render(w, r, s, http.StatusOK, "registration", page{Title: "Registration " + reg.RegistrationID, Section: "registrations", Data: d})
}

func (h *Handler) deleteRegistration(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if err := h.o.Manager.DeleteRegistration(r.Context(), id, r.PostFormValue("etag")); err != nil {
		h.fail(w, r, s, err)
		return
	}
	h.done(w, r, s, "/console/registrations", "Registration "+id+" deleted: the device's next registration is an initial assignment.")
}
