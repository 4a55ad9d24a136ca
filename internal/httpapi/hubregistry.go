package httpapi

// The device identity registry on a built-in hub's HTTPS surface (the
// IoT Hub service API, §4.2, §4.3 and §4.8 of the protocol reference):
//
//	PUT    /devices/{id}         create (no If-Match) or replace (If-Match etag or *)
//	GET    /devices/{id}         read
//	DELETE /devices/{id}         delete (If-Match optional: etag or *)
//	GET    /devices[/]?top=N     list
//	POST   /devices              bulk (an array of ExportImportDevice)
//	GET    /statistics/devices   identity counts
//	GET    /statistics/service   connected devices (of this node)
//
// Reads need RegistryRead, writes RegistryWrite; /statistics/service needs
// ServiceConnect. Modules (/devices/{id}/modules…) are not supported and
// answer 400 in IoT Hub's shape.

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/iothub"
)

// serveHubRegistry routes the registry requests of serveHub; false when
// the request is not one of them (a POST to /devices/{id} is not: the
// query is POST /devices/query).
func (h *Handler) serveHubRegistry(w http.ResponseWriter, r *http.Request, hub string, segs []string) bool {
	is := func(i int, s string) bool { return strings.EqualFold(segs[i], s) }
	switch {
	case len(segs) == 1 && is(0, "devices"):
		switch r.Method {
		case http.MethodGet:
			h.hubService(w, r, hub, access.RegistryRead, func() { h.listDevices(w, r, hub) })
		case http.MethodPost:
			h.hubService(w, r, hub, access.RegistryWrite, func() { h.bulkDevices(w, r, hub) })
		default:
			h.hubMethod(w, r, http.MethodGet, http.MethodPost)
		}
	case len(segs) == 2 && is(0, "devices") && r.Method != http.MethodPost:
		switch r.Method {
		case http.MethodGet:
			h.hubService(w, r, hub, access.RegistryRead, func() { h.getDevice(w, r, hub, segs[1]) })
		case http.MethodPut:
			h.hubService(w, r, hub, access.RegistryWrite, func() { h.putDevice(w, r, hub, segs[1]) })
		case http.MethodDelete:
			h.hubService(w, r, hub, access.RegistryWrite, func() { h.deleteDevice(w, r, hub, segs[1]) })
		default:
			h.hubMethod(w, r, http.MethodGet, http.MethodPut, http.MethodDelete)
		}
	case len(segs) >= 3 && is(0, "devices") && is(2, "modules"):
		h.writeHubError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid,
			Message: "Modules are not supported by dps's built-in hub."}, nil)
	case len(segs) == 2 && is(0, "statistics") && is(1, "devices"):
		if h.hubMethod(w, r, http.MethodGet) {
			h.hubService(w, r, hub, access.RegistryRead, func() { h.deviceStatistics(w, r, hub) })
		}
	case len(segs) == 2 && is(0, "statistics") && is(1, "service"):
		if h.hubMethod(w, r, http.MethodGet) {
			h.hubService(w, r, hub, access.ServiceConnect, func() {
				writeJSON(w, http.StatusOK, struct {
					ConnectedDeviceCount int `json:"connectedDeviceCount"`
				}{h.o.Hub.ConnectedDevices(hub)})
			})
		}
	default:
		return false
	}
	return true
}

// hubDevice is the registry's Device JSON, members in the order of IoT
// Hub's responses.
type hubDevice struct {
	DeviceID                   string            `json:"deviceId"`
	GenerationID               string            `json:"generationId"`
	ETag                       string            `json:"etag"`
	ConnectionState            string            `json:"connectionState"`
	Status                     string            `json:"status"`
	StatusReason               *string           `json:"statusReason"`
	ConnectionStateUpdatedTime string            `json:"connectionStateUpdatedTime"`
	StatusUpdatedTime          string            `json:"statusUpdatedTime"`
	LastActivityTime           string            `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int               `json:"cloudToDeviceMessageCount"`
	Authentication             hubAuthentication `json:"authentication"`
	Capabilities               hubCapabilities   `json:"capabilities"`
	DeviceScope                string            `json:"deviceScope,omitempty"`
}

type hubAuthentication struct {
	SymmetricKey   hubSymmetricKey `json:"symmetricKey"`
	X509Thumbprint hubThumbprint   `json:"x509Thumbprint"`
	Type           string          `json:"type"`
}

type hubSymmetricKey struct {
	Primary   *string `json:"primaryKey"`
	Secondary *string `json:"secondaryKey"`
}

// registryNever is how the registry writes a time it never recorded
// (without the twin's Z).
const registryNever = "0001-01-01T00:00:00"

// registryTime is a registry time: UTC, seven fractional digits.
func registryTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.0000000Z") }

func fromDevice(d iothub.Device) hubDevice {
	out := hubDevice{
		DeviceID:                   d.DeviceID,
		GenerationID:               d.GenerationID,
		ETag:                       d.ETag,
		ConnectionState:            "Disconnected",
		Status:                     string(d.Status),
		StatusReason:               orNull(d.StatusReason),
		ConnectionStateUpdatedTime: registryNever,
		StatusUpdatedTime:          registryNever,
		LastActivityTime:           registryNever,
		CloudToDeviceMessageCount:  d.CloudToDeviceMessages,
		Authentication: hubAuthentication{
			SymmetricKey:   hubSymmetricKey{orNull(string(d.Auth.PrimaryKey)), orNull(string(d.Auth.SecondaryKey))},
			X509Thumbprint: hubThumbprint{orNull(d.Auth.PrimaryThumbprint), orNull(d.Auth.SecondaryThumbprint)},
			Type:           string(d.Auth.Type),
		},
		Capabilities: hubCapabilities{d.IoTEdge},
		DeviceScope:  d.DeviceScope(),
	}
	if d.Connected {
		out.ConnectionState = "Connected"
		out.ConnectionStateUpdatedTime = registryTime(d.ConnectedSince)
		out.LastActivityTime = registryTime(d.ConnectedSince)
	}
	return out
}

// deviceInput is a Device (or ExportImportDevice) body as clients send it:
// read-only members are ignored.
type deviceInput struct {
	DeviceID       string `json:"deviceId"`
	ID             string `json:"id"` // ExportImportDevice
	Status         string `json:"status"`
	StatusReason   string `json:"statusReason"`
	Authentication *struct {
		SymmetricKey *struct {
			PrimaryKey   string `json:"primaryKey"`
			SecondaryKey string `json:"secondaryKey"`
		} `json:"symmetricKey"`
		X509Thumbprint *struct {
			PrimaryThumbprint   string `json:"primaryThumbprint"`
			SecondaryThumbprint string `json:"secondaryThumbprint"`
		} `json:"x509Thumbprint"`
		Type string `json:"type"`
	} `json:"authentication"`
	Capabilities *struct {
		IoTEdge bool `json:"iotEdge"`
	} `json:"capabilities"`
	// ExportImportDevice's members.
	ImportMode string          `json:"importMode"`
	ETag       string          `json:"eTag"`
	TwinETag   string          `json:"twinETag"`
	Tags       json.RawMessage `json:"tags"`
	Properties *struct {
		Desired  json.RawMessage `json:"desired"`
		Reported json.RawMessage `json:"reported"`
	} `json:"properties"`
}

func (in deviceInput) device(id string) iothub.Device {
	d := iothub.Device{DeviceID: id, Status: dps.DeviceStatus(strings.ToLower(in.Status)), StatusReason: in.StatusReason}
	if a := in.Authentication; a != nil {
		d.Auth.Type = dps.HubAuthType(a.Type)
		if k := a.SymmetricKey; k != nil {
			d.Auth.PrimaryKey, d.Auth.SecondaryKey = dps.Key(k.PrimaryKey), dps.Key(k.SecondaryKey)
		}
		if t := a.X509Thumbprint; t != nil {
			d.Auth.PrimaryThumbprint, d.Auth.SecondaryThumbprint = t.PrimaryThumbprint, t.SecondaryThumbprint
		}
	}
	if in.Capabilities != nil {
		d.IoTEdge = in.Capabilities.IoTEdge
	}
	return d
}

func (h *Handler) answerDevice(w http.ResponseWriter, r *http.Request, d iothub.Device, err error) {
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	w.Header()["ETag"] = []string{`"` + d.ETag + `"`}
	writeJSON(w, http.StatusOK, fromDevice(d))
}

func (h *Handler) getDevice(w http.ResponseWriter, r *http.Request, hub, deviceID string) {
	d, err := h.o.Hub.GetDevice(r.Context(), hub, deviceID)
	h.answerDevice(w, r, d, err)
}

// putDevice creates (no If-Match) or replaces a device identity.
func (h *Handler) putDevice(w http.ResponseWriter, r *http.Request, hub, deviceID string) {
	body, err := readHubBody(w, r)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	var in deviceInput
	if err := json.Unmarshal(body, &in); err != nil {
		h.writeHubError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid,
			Message: "The body is not a device identity {\"deviceId\":…,\"status\":…,\"authentication\":{…}}: " + err.Error()}, nil)
		return
	}
	if in.DeviceID != "" && in.DeviceID != deviceID {
		h.writeHubError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid,
			Message: "The body's deviceId " + strconv.Quote(in.DeviceID) + " is not the path's " + strconv.Quote(deviceID) + "."}, nil)
		return
	}
	var d iothub.Device
	if ifMatch := r.Header.Get("If-Match"); ifMatch == "" {
		d, err = h.o.Hub.CreateDevice(r.Context(), hub, in.device(deviceID))
	} else {
		d, err = h.o.Hub.UpdateDevice(r.Context(), hub, in.device(deviceID), ifMatch)
	}
	h.answerDevice(w, r, d, err)
}

func (h *Handler) deleteDevice(w http.ResponseWriter, r *http.Request, hub, deviceID string) {
	if err := h.o.Hub.DeleteDevice(r.Context(), hub, deviceID, r.Header.Get("If-Match")); err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) listDevices(w http.ResponseWriter, r *http.Request, hub string) {
	top := 0 // outside 1–1000: 1000, as IoT Hub reads it
	if v := r.URL.Query().Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			h.writeHubError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "top must be an integer"}, nil)
			return
		}
		top = n
	}
	ds, err := h.o.Hub.ListDevices(r.Context(), hub, top)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	out := make([]hubDevice, len(ds))
	for i, d := range ds {
		out[i] = fromDevice(d)
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) deviceStatistics(w http.ResponseWriter, r *http.Request, hub string) {
	st, err := h.o.Hub.Statistics(r.Context(), hub)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Total    int `json:"totalDeviceCount"`
		Enabled  int `json:"enabledDeviceCount"`
		Disabled int `json:"disabledDeviceCount"`
	}{st.Total, st.Enabled, st.Disabled})
}

// hubBulkResult is BulkRegistryOperationResult.
type hubBulkResult struct {
	IsSuccessful bool             `json:"isSuccessful"`
	Errors       []hubBulkError   `json:"errors"`
	Warnings     []hubBulkWarning `json:"warnings"`
}

type hubBulkError struct {
	DeviceID    string  `json:"deviceId"`
	ErrorCode   string  `json:"errorCode"`
	ErrorStatus string  `json:"errorStatus"`
	ModuleID    *string `json:"moduleId"`
	Operation   string  `json:"operation"`
}

type hubBulkWarning struct {
	DeviceID      string `json:"deviceId"`
	WarningCode   string `json:"warningCode"`
	WarningStatus string `json:"warningStatus"`
}

// bulkDevices runs a bulk registry operation: 200 with
// isSuccessful false and the failed items when some failed (those that
// succeeded took effect), 400 when the request itself is not valid.
func (h *Handler) bulkDevices(w http.ResponseWriter, r *http.Request, hub string) {
	body, err := readHubBody(w, r)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	var ins []deviceInput
	if err := json.Unmarshal(body, &ins); err != nil {
		h.writeHubError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid,
			Message: "The body is not an array of devices [{\"id\":…,\"importMode\":…},…]: " + err.Error()}, nil)
		return
	}
	items := make([]iothub.BulkItem, len(ins))
	for i, in := range ins {
		id := in.ID
		if id == "" {
			id = in.DeviceID
		}
		it := iothub.BulkItem{Mode: in.ImportMode, Device: in.device(id), ETag: in.ETag, TwinETag: in.TwinETag, Tags: in.Tags}
		if in.Properties != nil {
			it.Desired, it.Reported = in.Properties.Desired, in.Properties.Reported
		}
		items[i] = it
	}
	failed, err := h.o.Hub.Bulk(r.Context(), hub, items)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	res := hubBulkResult{IsSuccessful: len(failed) == 0, Errors: []hubBulkError{}, Warnings: []hubBulkWarning{}}
	for _, f := range failed {
		e := dps.AsError(f.Err)
		res.Errors = append(res.Errors, hubBulkError{DeviceID: f.DeviceID, ErrorCode: hubErrorName(e, e.Code),
			ErrorStatus: e.Message, Operation: f.Mode})
	}
	writeJSON(w, http.StatusOK, res)
}
