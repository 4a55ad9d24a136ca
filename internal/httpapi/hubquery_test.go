package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"
)

const queryPath = "/devices/query?api-version=2021-04-12"

func queryBody(q string) []byte {
	b, _ := json.Marshal(map[string]string{"query": q})
	return b
}

// TestHubQuery: POST /devices/query answers a JSON array, x-ms-item-type,
// and x-ms-continuation only while another page exists; the twins are
// those GET /twins answers.
func TestHubQuery(t *testing.T) {
	f := newHubFixture(t, nil)
	ts := f.server(t)
	c := ts.Client()
	auth := f.serviceToken("iothubowner", f.owner)
	post := func(q string, hdr map[string]string) hubAnswer {
		t.Helper()
		h := map[string]string{"Authorization": auth, "Content-Type": "application/json; charset=utf-8"}
		for k, v := range hdr {
			h[k] = v
		}
		return do(t, c, ts, "POST", queryPath, h, queryBody(q))
	}

	// SELECT *, two per page (the Node SDK's createQuery(sql, 2)).
	a := post("SELECT * FROM devices WHERE tags.model = 'm1'", map[string]string{"x-ms-max-item-count": "2"})
	token := a.header.Get("x-ms-continuation")
	if a.status != 200 || a.header.Get("x-ms-item-type") != "Twin" || token == "" || a.header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("first page: %d %v %s", a.status, a.header, a.body)
	}
	var page []json.RawMessage
	if err := json.Unmarshal([]byte(a.body), &page); err != nil || len(page) != 2 {
		t.Fatalf("first page %s: %v", a.body, err)
	}
	owner := map[string]string{"Authorization": auth}
	for i, id := range []string{"dev-1", "dev-off"} {
		if g := do(t, c, ts, "GET", "/twins/"+id, owner, nil); g.body != string(page[i]) {
			t.Errorf("query item %d\n%s\nGET /twins/%s\n%s", i, page[i], id, g.body)
		}
	}
	a = post("SELECT * FROM devices WHERE tags.model = 'm1'", map[string]string{"x-ms-max-item-count": "2", "x-ms-continuation": token})
	if _, more := a.header["X-Ms-Continuation"]; a.status != 200 || more || !strings.HasPrefix(a.body, `[{"deviceId":"dev-x",`) {
		t.Fatalf("second page: %d %v %s", a.status, a.header, a.body)
	}

	for _, c := range []struct{ q, item, body string }{
		{"SELECT COUNT() FROM devices", "Raw", `[{"numberOfDevices":3}]`},
		{"select count() as enabled from devices where status = 'enabled' and properties.desired.interval = 10", "Raw", `[{"enabled":2}]`},
		{"SELECT deviceId, statusReason AS why FROM devices WHERE status = 'disabled'", "Raw", `[{"deviceId":"dev-off","why":"stolen"}]`},
		{"SELECT deviceId FROM devices WHERE authenticationType = 'selfSigned'", "Raw", `[{"deviceId":"dev-x"}]`},
		{"SELECT deviceId FROM devices WHERE tags.model = 'm2'", "Raw", `[]`},
		{"SELECT * FROM devices WHERE tags.model = 'm2'", "Twin", `[]`},
	} {
		a := post(c.q, nil)
		if _, more := a.header["X-Ms-Continuation"]; a.status != 200 || more || a.header.Get("x-ms-item-type") != c.item || a.body != c.body {
			t.Errorf("%s: %d %v %s, want %s %s", c.q, a.status, a.header, a.body, c.item, c.body)
		}
	}

	// Refusals: IoT Hub's error shape.
	wantHubError(t, post("SELECT * FROM devices WHERE STARTSWITH(deviceId, 'dev')", nil), 400, "ArgumentInvalid")
	if a := post("SELECT * FROM devices GROUP BY status", nil); !strings.Contains(a.body, "GROUP BY is not supported") {
		t.Errorf("GROUP BY: %s", a.body)
	}
	wantHubError(t, post("SELECT * FROM devices", map[string]string{"x-ms-max-item-count": "ten"}), 400, "ArgumentInvalid")
	wantHubError(t, post("SELECT * FROM devices", map[string]string{"x-ms-continuation": "!!"}), 400, "ArgumentInvalid")
	wantHubError(t, do(t, c, ts, "POST", queryPath, owner, []byte(`SELECT * FROM devices`)), 400, "IotHubFormatError")
	wantHubError(t, do(t, c, ts, "POST", queryPath, owner, []byte(`{}`)), 400, "ArgumentInvalid")
	wantHubError(t, do(t, c, ts, "GET", queryPath, owner, nil), 405, "InvalidOperation")
	// Queries need ServiceConnect; a device's token is no service token.
	wantHubError(t, do(t, c, ts, "POST", queryPath, map[string]string{"Authorization": f.serviceToken("registryRead", f.reader)}, queryBody("SELECT * FROM devices")), 401, "IotHubUnauthorizedAccess")
	wantHubError(t, do(t, c, ts, "POST", queryPath, map[string]string{"Authorization": f.deviceToken("dev-1", f.key1)}, queryBody("SELECT * FROM devices")), 401, "IotHubUnauthorizedAccess")
}
