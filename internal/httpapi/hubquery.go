package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/iothub"
)

// A built-in hub's query API: POST /devices/query with
// {"query":"SELECT …"}, paged by the request headers x-ms-max-item-count
// (default 100, at most 1000) and x-ms-continuation; the answer is 200
// with a JSON array (twins for SELECT *, plain objects for projections
// and COUNT()), x-ms-item-type (Twin or Raw) and, only when another page
// exists, x-ms-continuation (the Node SDK pages while the header is
// present). Queries need ServiceConnect, as IoT Hub's do.

// queryRequest is the body of a query (QuerySpecification).
type queryRequest struct {
	Query *string `json:"query"`
}

// serveHubQuery serves POST /devices/query and reports whether the path
// was it.
func (h *Handler) serveHubQuery(w http.ResponseWriter, r *http.Request, hub string, segs []string) bool {
	if len(segs) != 2 || !strings.EqualFold(segs[0], "devices") || !strings.EqualFold(segs[1], "query") {
		return false
	}
	if h.hubMethod(w, r, http.MethodPost) {
		h.hubService(w, r, hub, access.ServiceConnect, func() { h.hubQuery(w, r, hub) })
	}
	return true
}

func (h *Handler) hubQuery(w http.ResponseWriter, r *http.Request, hub string) {
	data, err := readHubBody(w, r)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	var req queryRequest
	if err := json.Unmarshal(data, &req); err != nil {
		h.writeHubError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeFormatError,
			Message: `the body is not a query {"query":"SELECT * FROM devices …"}: ` + err.Error()}, nil)
		return
	}
	if req.Query == nil || strings.TrimSpace(*req.Query) == "" {
		h.writeHubError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: `the body has no query: {"query":"SELECT * FROM devices …"}`}, nil)
		return
	}
	maxItems := 0
	if v := strings.TrimSpace(r.Header.Get("x-ms-max-item-count")); v != "" {
		if maxItems, err = strconv.Atoi(v); err != nil || maxItems < 0 {
			h.writeHubError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid,
				Message: "x-ms-max-item-count must be a page size from 1 to " + strconv.Itoa(iothub.MaxQueryPageSize)}, nil)
			return
		}
	}
	res, err := h.o.Hub.Query(r.Context(), hub, *req.Query, r.Header.Get("x-ms-continuation"), maxItems)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	w.Header()["x-ms-item-type"] = []string{res.ItemType}
	if res.Continuation != "" {
		w.Header()["x-ms-continuation"] = []string{res.Continuation}
	}
	if res.ItemType == "Twin" {
		twins := make([]hubTwin, 0, len(res.Twins))
		for _, t := range res.Twins {
			twins = append(twins, fromServiceTwin(t))
		}
		writeJSON(w, http.StatusOK, twins)
		return
	}
	rows := res.Rows
	if rows == nil {
		rows = []json.RawMessage{}
	}
	writeJSON(w, http.StatusOK, rows)
}
