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

// Routes is what the hub's GET /routes needs of the message routing
// engine (internal/routing's Engine).
type Routes interface {
	// Status returns the hub's routes; KindNotFound when it has none.
	Status(ctx context.Context, hub string) ([]dps.RouteStatus, error)
	// DeadLetters lists a route's dead letters after sequence number
	// after; KindNotFound for a route the hub does not have.
	DeadLetters(ctx context.Context, hub, route string, after int64, limit int) ([]dps.DeadLetter, error)
}

// Dead letter pages of GET /routes/{name}/deadletters.
const (
	defaultDeadLetterPage = 100
	maxDeadLetterPage     = 1000
)

// serveHubRoutes serves the hub's message routes (dps extensions, for a
// hub access policy with ServiceConnect) and reports whether the request
// was one of them:
//
//	GET /routes                            wire.HubRoutes
//	GET /routes/{name}/deadletters?after=&max=   wire.HubDeadLetters
func (h *Handler) serveHubRoutes(w http.ResponseWriter, r *http.Request, hub string, segs []string) bool {
	switch {
	case len(segs) == 1 && strings.EqualFold(segs[0], "routes"):
		if h.hubMethod(w, r, http.MethodGet) {
			h.hubService(w, r, hub, access.ServiceConnect, func() { h.listRoutes(w, r, hub) })
		}
	case len(segs) == 3 && strings.EqualFold(segs[0], "routes") && strings.EqualFold(segs[2], "deadletters"):
		if h.hubMethod(w, r, http.MethodGet) {
			h.hubService(w, r, hub, access.ServiceConnect, func() { h.listDeadLetters(w, r, hub, segs[1]) })
		}
	default:
		return false
	}
	return true
}

func (h *Handler) listRoutes(w http.ResponseWriter, r *http.Request, hub string) {
	out := wire.HubRoutes{Routes: []wire.HubRoute{}}
	if h.o.Routes != nil {
		st, err := h.o.Routes.Status(r.Context(), hub)
		if err != nil && dps.KindOf(err) != dps.KindNotFound { // not found: the hub has no routes
			h.writeHubError(w, r, err, nil)
			return
		}
		for _, s := range st {
			out.Routes = append(out.Routes, wire.HubRouteOf(s))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) listDeadLetters(w http.ResponseWriter, r *http.Request, hub, route string) {
	q := r.URL.Query()
	var after int64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			h.writeHubError(w, r, dps.Errorf(dps.KindInvalid, "after=%q: want a sequence number", v), nil)
			return
		}
		after = n
	}
	limit := defaultDeadLetterPage
	if v := q.Get("max"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxDeadLetterPage {
			h.writeHubError(w, r, dps.Errorf(dps.KindInvalid, "max=%q: want a number from 1 to %d", v, maxDeadLetterPage), nil)
			return
		}
		limit = n
	}
	noRoute := &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNoSuchEndpoint, Message: "This hub has no route " + strconv.Quote(route) + "."}
	if h.o.Routes == nil {
		h.writeHubError(w, r, noRoute, nil)
		return
	}
	dls, err := h.o.Routes.DeadLetters(r.Context(), hub, route, after, limit)
	if err != nil {
		if dps.KindOf(err) == dps.KindNotFound {
			err = noRoute // NotFound, not DeviceNotFound
		}
		h.writeHubError(w, r, err, nil)
		return
	}
	writeJSON(w, http.StatusOK, wire.HubDeadLettersOf(after, dls))
}
