package iothub

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/hubquery"
	"github.com/opendps/dps/internal/twin"
)

// Query page sizes (x-ms-max-item-count): IoT Hub's default and maximum.
const (
	DefaultQueryPageSize = 100
	MaxQueryPageSize     = 1000
)

// queryScanPage is how many identities a query reads from the store at a
// time.
const queryScanPage = 200

// QueryResult is one page of a query's answer.
type QueryResult struct {
	// ItemType is the answer's x-ms-item-type: Twin (SELECT *) or Raw.
	ItemType string
	// Twins are the matching twins of SELECT *, in device-ID order.
	Twins []ServiceTwin
	// Rows are the rows of a projection (one per matching device) or of
	// COUNT() (one).
	Rows []json.RawMessage
	// Continuation resumes the query after this page (x-ms-continuation);
	// "" when there is no further page.
	Continuation string
}

// Query runs an IoT Hub query (internal/hubquery's subset) over a hub's
// devices: up to maxItems twins or rows (0: DefaultQueryPageSize; at most
// MaxQueryPageSize) from continuation on ("" from the first device). The
// devices are read in pages from the store in folded device-ID order; a
// page ends early only at the last device, so a page of fewer than
// maxItems has no continuation. COUNT() reads every device and answers
// one row. connectionState is this node's view, as ServiceTwin's.
//
// Errors: KindInvalid for a query outside the subset or a continuation
// token this hub did not give.
func (s *Service) Query(ctx context.Context, hub, text, continuation string, maxItems int) (QueryResult, error) {
	q, err := hubquery.Parse(text)
	if err != nil {
		return QueryResult{}, err
	}
	if maxItems <= 0 {
		maxItems = DefaultQueryPageSize
	}
	maxItems = min(maxItems, MaxQueryPageSize)
	after := ""
	if continuation != "" && q.Select() != hubquery.SelectCount {
		if after, err = decodeContinuation(continuation); err != nil {
			return QueryResult{}, err
		}
	}
	res := QueryResult{ItemType: q.ItemType()}
	count := 0
	for {
		page, err := s.o.Store.ListHubDevices(ctx, hub, after, queryScanPage)
		if err != nil {
			return QueryResult{}, err
		}
		for i, d := range page {
			after = d.DeviceID
			st, doc, err := s.queryDoc(hub, d, q)
			if err != nil {
				return QueryResult{}, err
			}
			if !q.Match(doc) {
				continue
			}
			switch q.Select() {
			case hubquery.SelectCount:
				count++
				continue
			case hubquery.SelectTwins:
				res.Twins = append(res.Twins, st)
			case hubquery.SelectProjection:
				res.Rows = append(res.Rows, q.Project(doc))
			}
			if len(res.Twins)+len(res.Rows) == maxItems {
				if i < len(page)-1 || len(page) == queryScanPage {
					res.Continuation = encodeContinuation(d.DeviceID)
				}
				return res, nil
			}
		}
		if len(page) < queryScanPage {
			break
		}
		if err := ctx.Err(); err != nil {
			return QueryResult{}, err
		}
	}
	if q.Select() == hubquery.SelectCount {
		res.Rows = []json.RawMessage{q.CountRow(count)}
	}
	return res, nil
}

// queryDoc is a device's service twin and the JSON document a query
// evaluates: the members of the service twin JSON (GET /twins/{id}), tags
// and properties decoded only when the query reads them.
func (s *Service) queryDoc(hub string, d dps.HubDevice, q *hubquery.Query) (ServiceTwin, map[string]any, error) {
	t, err := twin.Of(d)
	if err != nil {
		return ServiceTwin{}, nil, err
	}
	st := s.serviceTwin(hub, d, t.Service(), twinETag(d.GenerationID, t.Version()))
	doc := map[string]any{
		"deviceId":           st.DeviceID,
		"etag":               st.ETag,
		"deviceEtag":         st.DeviceETag,
		"status":             string(st.Status),
		"statusReason":       nil,
		"connectionState":    "Disconnected",
		"authenticationType": string(st.AuthType),
		"modelId":            st.ModelID,
		"version":            json.Number(strconv.FormatInt(st.Twin.Version, 10)),
		"capabilities":       map[string]any{"iotEdge": st.IoTEdge},
	}
	if st.StatusReason != "" {
		doc["statusReason"] = st.StatusReason
	}
	if st.Connected {
		doc["connectionState"] = "Connected"
	}
	if len(st.Twin.Tags) > 0 && q.Uses("tags") {
		tags, err := decodeObject(st.Twin.Tags)
		if err != nil {
			return ServiceTwin{}, nil, err
		}
		doc["tags"] = tags
	}
	if q.Uses("properties") {
		desired, err := decodeObject(st.Twin.Properties.Desired)
		if err != nil {
			return ServiceTwin{}, nil, err
		}
		reported, err := decodeObject(st.Twin.Properties.Reported)
		if err != nil {
			return ServiceTwin{}, nil, err
		}
		doc["properties"] = map[string]any{"desired": desired, "reported": reported}
	}
	return st, doc, nil
}

func decodeObject(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, dps.AsError(err)
	}
	return m, nil
}

// A continuation token is opaque to clients: the base64 (URL alphabet) of
// "d:" and the last device ID of the page.
const continuationPrefix = "d:"

func encodeContinuation(deviceID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(continuationPrefix + deviceID))
}

func decodeContinuation(token string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(token))
	id, ok := strings.CutPrefix(string(b), continuationPrefix)
	if err != nil || !ok || id == "" {
		return "", &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid,
			Message: "x-ms-continuation is not a continuation token of this hub's queries"}
	}
	return id, nil
}
