package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/faults"
)

// The fault injection rules at run time (a dps extension of the service
// API, for policies with ServiceConfig):
//
//	GET    /faults         every rule with its count of injected faults
//	PUT    /faults/{name}  add or replace a rule (the faults: YAML shape, in JSON); its count starts at 0
//	DELETE /faults/{name}  remove a rule; answers its last count
//
// Rules set here last until the process ends; the configuration's are set
// again at every start.
//
// Fault injection is on unless dpsd's configuration turns it off
// (faults.enabled: false; Options.Faults nil): then every request here,
// once authorized, is answered 409 with 409001 and a message that says how
// to turn it on again. Not
// 404: the endpoint exists and the caller may use it — it is the
// instance's state that refuses (and DELETE already answers 404 for a rule
// that does not exist, which a script must be able to tell apart).

// faultsOffMessage is the answer of /faults when fault injection is off.
const faultsOffMessage = "Fault injection is off on this instance: dpsd's configuration sets faults.enabled: false (or DPSD_FAULTS_ENABLED=false); remove that or set it to true, and restart dpsd."

func (h *ServiceHandler) faultRoutes(segs []string) ([]route, []string, bool) {
	if !strings.EqualFold(segs[0], "faults") {
		return nil, nil, false
	}
	list, put, del := h.listFaults, h.putFault, h.deleteFault
	if h.o.Faults == nil {
		list, put, del = h.faultsOff, h.faultsOff, h.faultsOff
	}
	switch len(segs) {
	case 1:
		return []route{{http.MethodGet, access.ServiceConfig, list}}, nil, true
	case 2:
		return []route{
			{http.MethodPut, access.ServiceConfig, put},
			{http.MethodDelete, access.ServiceConfig, del},
		}, segs[1:], true
	}
	return nil, nil, false
}

func (h *ServiceHandler) faultsOff(w http.ResponseWriter, r *http.Request, _ []string) {
	h.err.writeError(w, r, &dps.Error{Kind: dps.KindConflict, Code: dps.CodeConflict, Message: faultsOffMessage})
}

func (h *ServiceHandler) listFaults(w http.ResponseWriter, r *http.Request, _ []string) {
	list := h.o.Faults.List()
	if list == nil {
		list = []faults.Status{}
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *ServiceHandler) putFault(w http.ResponseWriter, r *http.Request, ids []string) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		h.err.writeError(w, r, &dps.Error{Kind: dps.KindTooLarge, Message: "request body exceeds the 96 KB limit"})
		return
	}
	var rule faults.Rule
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rule); err != nil {
		h.err.writeError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "the request body is not a fault rule: " + err.Error()})
		return
	}
	if rule.Name != "" && !strings.EqualFold(rule.Name, ids[0]) {
		h.err.writeError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "name in the body does not match the path"})
		return
	}
	rule.Name = ids[0]
	st, err := h.o.Faults.Put(rule)
	if err != nil {
		h.err.writeError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "invalid fault rule: " + strings.ReplaceAll(err.Error(), "\n", "; ")})
		return
	}
	h.o.Logger.Info("fault rule set", "rule", st.Name)
	writeJSON(w, http.StatusOK, st)
}

func (h *ServiceHandler) deleteFault(w http.ResponseWriter, r *http.Request, ids []string) {
	st, ok := h.o.Faults.Delete(ids[0])
	if !ok {
		h.err.writeError(w, r, &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNotFound, Message: "no fault rule " + ids[0]})
		return
	}
	h.o.Logger.Info("fault rule deleted", "rule", st.Name, "injected", st.Injected)
	writeJSON(w, http.StatusOK, st)
}
