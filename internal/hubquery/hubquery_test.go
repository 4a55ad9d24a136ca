package hubquery_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/hubquery"
)

// The twins of the documentation's examples (query-twins), as GET
// /twins returns them.
var twins = map[string]string{
	"myDeviceId": `{"deviceId":"myDeviceId","etag":"AAAAAAAAAAc=","status":"enabled","connectionState":"Disconnected",
		"authenticationType":"sas","modelId":"","version":2,
		"tags":{"location":{"region":"US","plant":"Redmond43"}},
		"properties":{
			"desired":{"telemetryConfig":{"configId":"db00ebf5","sendFrequencyInSecs":300},"$metadata":{"$lastUpdated":"2026-01-01T00:00:00Z"},"$version":4},
			"reported":{"connectivity":{"type":"cellular"},"telemetryConfig":{"configId":"db00ebf5","sendFrequencyInSecs":300,"status":"Success"},"$metadata":{"$lastUpdated":"2026-01-02T00:00:00Z"},"$version":7}},
		"capabilities":{"iotEdge":false}}`,
	"pending": `{"deviceId":"pending","etag":"AAAAAAAAAAE=","status":"enabled","connectionState":"Connected","version":3,
		"tags":{"location":{"region":"EU","plant":"Dublin1"},"floor":3},
		"properties":{"desired":{"$version":1},"reported":{"telemetryConfig":{"status":"Pending"},"connectivity":{"type":"wifi"},"temp":21.5,"ok":true,"gone":null,"$version":2}},
		"capabilities":{"iotEdge":true}}`,
	"bare": `{"deviceId":"bare","etag":"AAAAAAAAAAI=","status":"disabled","statusReason":"stolen","connectionState":"Disconnected","version":1,
		"properties":{"desired":{"$version":1},"reported":{"temp":"21.5","$version":1}},"capabilities":{"iotEdge":false}}`,
	"O'Brien": `{"deviceId":"O'Brien","status":"enabled","connectionState":"Disconnected","version":1,
		"tags":{"location":{"region":"US"},"floor":10,"name":"Ünïcode 😀"},
		"properties":{"desired":{"$version":1},"reported":{"temp":-3,"$version":9}},"capabilities":{"iotEdge":false}}`,
}

func docs(t testing.TB) map[string]map[string]any {
	out := map[string]map[string]any{}
	for id, s := range twins {
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		out[id] = m
	}
	return out
}

// matching returns the sorted IDs of the twins the query selects.
func matching(t *testing.T, q *hubquery.Query) []string {
	t.Helper()
	var ids []string
	for id, d := range docs(t) {
		if q.Match(d) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func TestWhere(t *testing.T) {
	all := []string{"O'Brien", "bare", "myDeviceId", "pending"}
	for _, c := range []struct {
		where string
		want  []string
	}{
		// The documentation's examples.
		{"tags.location.region = 'US'", []string{"O'Brien", "myDeviceId"}},
		{"tags.location.region = 'US' AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60", []string{"myDeviceId"}},
		{"properties.reported.telemetryConfig.status = 'Pending'", []string{"pending"}},
		{"tags.location.region IN ['US', 'EU']", []string{"O'Brien", "myDeviceId", "pending"}},
		{"tags.location.region NIN ['US', 'EU']", nil}, // bare has no region: undefined
		{"properties.reported.connectivity IN ['cellular', 'wifi']", nil},
		{"properties.reported.connectivity.type IN ['cellular', 'wifi']", []string{"myDeviceId", "pending"}},
		{"IS_DEFINED(tags.location)", []string{"O'Brien", "myDeviceId", "pending"}},
		{"NOT IS_DEFINED(tags.location)", []string{"bare"}},
		{"is_defined(properties.reported.gone)", []string{"pending"}}, // null is defined
		// Identity members.
		{"deviceId = 'pending'", []string{"pending"}},
		{"deviceId = 'Pending'", nil}, // case-sensitive values
		{"deviceId = \"O'Brien\"", []string{"O'Brien"}},
		{`deviceId = 'O\'Brien'`, []string{"O'Brien"}},
		{"status = 'disabled'", []string{"bare"}},
		{"status <> 'disabled'", []string{"O'Brien", "myDeviceId", "pending"}},
		{"connectionState = 'Connected'", []string{"pending"}},
		{"capabilities.iotEdge = true", []string{"pending"}},
		{"statusReason = 'stolen'", []string{"bare"}},
		{"etag = 'AAAAAAAAAAc='", []string{"myDeviceId"}},
		{"version > 1", []string{"myDeviceId", "pending"}},
		{"properties.reported.$version >= 7", []string{"O'Brien", "myDeviceId"}},
		{"properties.desired.$metadata.$lastUpdated > '2025-12-31'", []string{"myDeviceId"}},
		// Three-valued logic: missing properties and type mismatches select nothing, negated or not.
		{"tags.location.region != 'US'", []string{"pending"}},
		{"NOT (tags.location.region = 'US')", []string{"pending"}},
		{"NOT IS_DEFINED(tags.location.region) OR tags.location.region != 'US'", []string{"bare", "pending"}},
		{"properties.reported.temp > 0", []string{"pending"}}, // "21.5" is a string
		{"properties.reported.temp = '21.5'", []string{"bare"}},
		{"NOT (properties.reported.temp > 0)", []string{"O'Brien"}},
		{"properties.reported.temp < 0 OR properties.reported.temp > 100", []string{"O'Brien"}},
		{"tags.floor = 3.0", []string{"pending"}},
		{"tags.floor > 3e0", []string{"O'Brien"}},
		{"tags.floor > '3'", nil},
		{"tags.floor < 10 AND tags.floor >= -1", []string{"pending"}},
		{"tags.name = 'Ünïcode \\ud83d\\ude00'", []string{"O'Brien"}},
		{"tags.location = 'US'", nil}, // an object compares with nothing
		{"properties.reported.ok = true", []string{"pending"}},
		{"properties.reported.ok != false", []string{"pending"}},
		{"properties.reported.ok = 1", nil},
		{"properties.reported.gone = null", []string{"pending"}},
		{"properties.reported.gone != null", nil},
		{"statusReason = null", nil}, // the others lack it altogether here
		{"properties.reported.temp IN [21.5, '21.5']", []string{"bare", "pending"}},
		{"properties.reported.temp NIN [21.5]", []string{"O'Brien"}}, // the others: type mismatch or equal
		{"deviceId NIN ['bare', 'pending']", []string{"O'Brien", "myDeviceId"}},
		{"tags.floor = tags.floor", []string{"O'Brien", "pending"}},
		{"deviceId = deviceId AND tags.floor != tags.floor", nil},
		// Precedence: NOT > AND > OR, parentheses, any case.
		{"deviceId = 'bare' OR deviceId = 'pending' AND status = 'disabled'", []string{"bare"}},
		{"(deviceId = 'bare' OR deviceId = 'pending') AND status = 'disabled'", []string{"bare"}},
		{"(deviceId = 'bare' OR deviceId = 'pending') and not status = 'disabled'", []string{"pending"}},
		{"NOT NOT deviceId = 'bare'", []string{"bare"}},
		{"1 = 1", all},
		{"'a' < 'b'", all},
		{"1 = '1'", nil},
	} {
		q, err := hubquery.Parse("SELECT * FROM devices WHERE " + c.where)
		if err != nil {
			t.Errorf("%s: %v", c.where, err)
			continue
		}
		if got := matching(t, q); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.where, got, c.want)
		}
	}
}

func TestSelect(t *testing.T) {
	d := docs(t)
	for _, c := range []struct {
		q, item string
		kind    hubquery.Select
		row     string // of myDeviceId (projections) or of 3 devices (count)
	}{
		{"SELECT * FROM devices", "Twin", hubquery.SelectTwins, ""},
		{"select * from DEVICES where tags.location.region = 'US'", "Twin", hubquery.SelectTwins, ""},
		{"SELECT COUNT() FROM devices", "Raw", hubquery.SelectCount, `{"numberOfDevices":3}`},
		{"SELECT COUNT() AS total FROM devices WHERE status = 'enabled'", "Raw", hubquery.SelectCount, `{"total":3}`},
		{"SELECT deviceId FROM devices", "Raw", hubquery.SelectProjection, `{"deviceId":"myDeviceId"}`},
		{"SELECT deviceId, tags.location.region, properties.reported.telemetryConfig FROM devices", "Raw", hubquery.SelectProjection,
			`{"deviceId":"myDeviceId","region":"US","telemetryConfig":{"configId":"db00ebf5","sendFrequencyInSecs":300,"status":"Success"}}`},
		{"SELECT tags.location.plant AS plant, deviceId AS id, tags.nothing, properties.reported.$version AS v FROM devices", "Raw", hubquery.SelectProjection,
			`{"plant":"Redmond43","id":"myDeviceId","v":7}`},
	} {
		q, err := hubquery.Parse(c.q)
		if err != nil {
			t.Errorf("%s: %v", c.q, err)
			continue
		}
		if q.ItemType() != c.item || q.Select() != c.kind {
			t.Errorf("%s: item type %s, select %d", c.q, q.ItemType(), q.Select())
		}
		var row json.RawMessage
		switch c.kind {
		case hubquery.SelectCount:
			row = q.CountRow(3)
		case hubquery.SelectProjection:
			row = q.Project(d["myDeviceId"])
		}
		if string(row) != c.row {
			t.Errorf("%s: row %s, want %s", c.q, row, c.row)
		}
		if c.row != "" && !json.Valid(row) {
			t.Errorf("%s: row %s is not JSON", c.q, row)
		}
	}
}

func TestUses(t *testing.T) {
	q, err := hubquery.Parse("SELECT deviceId FROM devices WHERE tags.a = 1 OR NOT IS_DEFINED(properties.reported.x)")
	if err != nil {
		t.Fatal(err)
	}
	for root, want := range map[string]bool{"deviceId": true, "tags": true, "properties": true, "status": false, "capabilities": false} {
		if q.Uses(root) != want {
			t.Errorf("Uses(%s) = %v", root, !want)
		}
	}
	q, _ = hubquery.Parse("SELECT * FROM devices")
	if q.Uses("tags") || q.Uses("deviceId") {
		t.Error("SELECT * without WHERE uses members")
	}
}

// TestRefused: what is outside the subset answers ArgumentInvalid with a
// message naming it, never an approximate result.
func TestRefused(t *testing.T) {
	for _, c := range []struct{ q, msg string }{
		{"", "expected SELECT"},
		{"SELECT", "expected a property path"},
		{"SELECT * FROM", "FROM the end of the query"},
		{"SELECT * FROM devices.modules", "devices.modules is not supported"},
		{"SELECT * FROM devices.jobs", "devices.jobs is not supported"},
		{"SELECT * FROM jobs", "only FROM devices"},
		{"SELECT TOP 10 * FROM devices", "TOP is not supported"},
		{"SELECT DISTINCT deviceId FROM devices", "DISTINCT is not supported"},
		{"SELECT properties.reported.status AS status, COUNT() AS n FROM devices GROUP BY properties.reported.status", "needs GROUP BY"},
		{"SELECT COUNT() AS n FROM devices GROUP BY status", "GROUP BY is not supported"},
		{"SELECT COUNT() AS n, deviceId FROM devices", "needs GROUP BY"},
		{"SELECT COUNT(deviceId) FROM devices", "COUNT takes no argument"},
		{"SELECT COUNT() AS from FROM devices", "a name after AS"},
		{"SELECT * FROM devices ORDER BY deviceId", "ORDER BY is not supported"},
		{"SELECT * FROM devices WHERE STARTSWITH(deviceId, 'a')", "STARTSWITH"},
		{"SELECT * FROM devices WHERE IS_NULL(tags.a)", "only IS_DEFINED"},
		{"SELECT LOWER(deviceId) FROM devices", "function LOWER in SELECT"},
		{"SELECT * FROM devices WHERE tags.a + 1 = 2", "unexpected character '+'"},
		{"SELECT * FROM devices WHERE tags.a-1 = 2", "arithmetic"},
		{"SELECT * FROM devices WHERE tags.a * 2 = 2", "arithmetic"},
		{"SELECT * FROM devices WHERE tags.a = 0x10", "hexadecimal"},
		{"SELECT * FROM devices WHERE tags.a[0] = 1", "indexing"},
		{"SELECT * FROM devices WHERE tags['a'] = 1", "indexing"},
		{"SELECT * FROM devices WHERE tags.a = ['x']", "can only follow IN"},
		{"SELECT * FROM devices WHERE tags.a IN 'x'", "IN and NIN take a list"},
		{"SELECT * FROM devices WHERE tags.a IN [tags.b]", "holds only strings"},
		{"SELECT * FROM devices WHERE tags.a IN []", "expected"},
		{"SELECT * FROM devices WHERE 'x' IN ['x']", "needs a property on its left"},
		{"SELECT * FROM devices WHERE tags.a > true", "compares only numbers and strings"},
		{"SELECT * FROM devices WHERE tags.a <= null", "compares only numbers and strings"},
		{"SELECT * FROM devices WHERE tags.a > tags.b", "between two properties"},
		{"SELECT * FROM devices WHERE tags.a = undefined", "undefined"},
		{"SELECT * FROM devices WHERE tags.a IS NULL", "IS (offset 35) is not supported"},
		{"SELECT * FROM devices WHERE tags.a LIKE 'x%'", "LIKE"},
		{"SELECT * FROM devices WHERE tags.a", "expected a comparison"},
		{"SELECT * FROM devices WHERE true", "expected a comparison"},
		{"SELECT * FROM devices WHERE tags.a = 'x' AND", "expected a property path"},
		{"SELECT * FROM devices WHERE (tags.a = 'x'", "expected ')'"},
		{"SELECT * FROM devices WHERE tags.a = 'x')", "expected the end of the query"},
		{"SELECT * FROM devices WHERE tags.a = 'x", "no closing quote"},
		{"SELECT * FROM devices WHERE tags.a = 'O''Brien'", "found the string 'Brien'"},
		{`SELECT * FROM devices WHERE tags.a = 'a\q'`, `unknown escape \q`},
		{`SELECT * FROM devices WHERE tags.a = '\ud83d'`, "surrogate"},
		{`SELECT * FROM devices WHERE tags.a = '\u12'`, "malformed"},
		{"SELECT * FROM devices WHERE tags.a ! = 1", "use != or NOT"},
		{"SELECT * FROM devices WHERE tags.a = 1e999", "out of range"},
		{"SELECT * FROM devices WHERE tags.a = 12ab", "malformed number"},
		{"SELECT * FROM devices WHERE tags.a = #", "unexpected character '#'"},
		{"SELECT * FROM devices WHERE DeviceId = 'x'", "did you mean deviceId?"},
		{"SELECT * FROM devices WHERE Tags.a = 'x'", "did you mean tags?"},
		{"SELECT * FROM devices WHERE lastActivityTime > '2020'", "lastActivityTime (offset 28) is not supported"},
		{"SELECT * FROM devices WHERE cloudToDeviceMessageCount > 0", "not supported"},
		{"SELECT * FROM devices WHERE foo = 1", "foo (offset 28) is not a property"},
		{"SELECT * FROM devices WHERE properties.tags = 1", "use properties.desired"},
		{"SELECT * FROM devices WHERE properties = 1", "use properties.desired"},
		{"SELECT * FROM devices WHERE capabilities.x = 1", "only capabilities.iotEdge"},
		{"SELECT * FROM devices WHERE deviceId.x = 1", "deviceId (offset 28) has no members"},
		{"SELECT deviceId, deviceId FROM devices", "two projections are named deviceId"},
		{"SELECT tags.a.x, tags.b.x FROM devices", "two projections are named x"},
		{"SELECT *, deviceId FROM devices", "expected FROM"},
		{"SELECT * FROM devices WHERE " + strings.Repeat("(", 100) + "deviceId = 'x'" + strings.Repeat(")", 100), "nested more than 64"},
		{"SELECT * FROM devices WHERE " + strings.Repeat("NOT ", 100) + "deviceId = 'x'", "nested more than 64"},
		{"SELECT * FROM devices WHERE deviceId = '\xff'", "not valid UTF-8"},
		{strings.Repeat(" ", 70000), "longer than"},
	} {
		q, err := hubquery.Parse(c.q)
		if err == nil {
			t.Errorf("%.80s: accepted (%v)", c.q, q.Select())
			continue
		}
		e := dps.AsError(err)
		if e.Kind != dps.KindInvalid || e.Code != dps.CodeInvalid || !strings.Contains(e.Message, c.msg) {
			t.Errorf("%.80s: %v %d %q, want a message with %q", c.q, e.Kind, e.Code, e.Message, c.msg)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"SELECT * FROM devices",
		"SELECT * FROM devices WHERE tags.location.region = 'US'",
		"SELECT * FROM devices WHERE properties.reported.telemetryConfig.status = 'Pending'",
		"select count() as n from devices where (status = 'enabled' or not is_defined(tags.x)) and version >= 2",
		"SELECT deviceId, tags.a AS b FROM devices WHERE tags.a IN ['x', 1, true, null] AND tags.b NIN [-1.5e3]",
		`SELECT * FROM devices WHERE tags.s = 'a\'b\u00e9\ud83d\ude00'`,
		"SELECT * FROM devices WHERE capabilities.iotEdge = false",
	} {
		f.Add(s)
	}
	d := docs(f)
	f.Fuzz(func(t *testing.T, s string) {
		q, err := hubquery.Parse(s)
		if err != nil {
			if e := dps.AsError(err); e.Kind != dps.KindInvalid || e.Code != dps.CodeInvalid || e.Message == "" {
				t.Fatalf("%q: %v", s, err)
			}
			return
		}
		for _, doc := range d {
			q.Match(doc)
			if q.Select() == hubquery.SelectProjection {
				if row := q.Project(doc); !json.Valid(row) {
					t.Fatalf("%q: row %s is not JSON", s, row)
				}
			}
		}
		if row := q.CountRow(7); q.Select() == hubquery.SelectCount && !bytes.Contains(row, []byte(":7}")) {
			t.Fatalf("%q: count row %s", s, row)
		}
	})
}
