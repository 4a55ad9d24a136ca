package iothub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/pgtest"
	"github.com/opendps/dps/internal/store/postgres"
	"github.com/opendps/dps/internal/twin"
)

const queryHub = "query.example.test"

// seedQueryHub puts n devices on queryHub (and one on another hub):
// dev-000…, region US for every third (EU otherwise), a reported
// telemetryConfig.status of Pending for every fifth, device 7 disabled
// and spelled DEV-007.
func seedQueryHub(tb testing.TB, st iothub.Store, n int) *iothub.Service {
	tb.Helper()
	ctx := context.Background()
	s := iothub.New(iothub.Options{Store: st, Hubs: []string{queryHub, "other.example.test"}, Now: func() time.Time { return t0 }})
	for i := range n {
		id := fmt.Sprintf("dev-%03d", i)
		region := "EU"
		if i%3 == 0 {
			region = "US"
		}
		d := dps.HubDevice{Hub: queryHub, DeviceID: id, GenerationID: "g" + id, Updated: t0,
			Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="}}
		if i == 7 {
			d.DeviceID, d.Status, d.StatusReason = "DEV-007", dps.DeviceDisabled, "lost"
		}
		tw, err := twin.New(json.RawMessage(fmt.Sprintf(`{"tags":{"location":{"region":%q},"n":%d},"properties":{"desired":{"interval":%d}}}`, region, i, i%10)), t0)
		if err != nil {
			tb.Fatal(err)
		}
		if i%5 == 0 {
			if _, err := tw.PatchReported([]byte(`{"telemetryConfig":{"status":"Pending"}}`), t0); err != nil {
				tb.Fatal(err)
			}
		}
		if d.LiveTwin, err = json.Marshal(tw); err != nil {
			tb.Fatal(err)
		}
		if _, err := st.PutHubDevice(ctx, d); err != nil {
			tb.Fatal(err)
		}
	}
	other := dps.HubDevice{Hub: "other.example.test", DeviceID: "dev-000", GenerationID: "x", Twin: json.RawMessage(`{"tags":{"location":{"region":"US"}}}`)}
	if _, err := st.PutHubDevice(ctx, other); err != nil {
		tb.Fatal(err)
	}
	return s
}

// queryAll pages through a query with page size max and returns the IDs
// (SELECT *) or rows, and the page lengths.
func queryAll(t *testing.T, s *iothub.Service, text string, max int) (items []string, pages []int) {
	t.Helper()
	token := ""
	for range 1000 {
		res, err := s.Query(context.Background(), queryHub, text, token, max)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		for _, tw := range res.Twins {
			items = append(items, tw.DeviceID)
		}
		for _, r := range res.Rows {
			items = append(items, string(r))
		}
		pages = append(pages, len(res.Twins)+len(res.Rows))
		if token = res.Continuation; token == "" {
			return items, pages
		}
	}
	t.Fatalf("%s: no end of pages", text)
	return nil, nil
}

func expectIDs(n int, keep func(i int) bool) []string {
	var out []string
	for i := range n {
		if keep(i) {
			id := fmt.Sprintf("dev-%03d", i)
			if i == 7 {
				id = "DEV-007"
			}
			out = append(out, id)
		}
	}
	return out
}

func TestQuerySQLite(t *testing.T) { testQuery(t, dpstest.NewSQLite(t)) }

func TestQueryPostgres(t *testing.T) {
	c, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	db, err := postgres.Open(context.Background(), c.DSN, postgres.Options{Schema: pgtest.Schema("query")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.DropSchema(context.Background()); db.Close() })
	testQuery(t, db)
}

func testQuery(t *testing.T, st iothub.Store) {
	const n = 250
	s := seedQueryHub(t, st, n)
	ctx := context.Background()

	// The documentation's example, paged by 7: every US device once, in order.
	us := expectIDs(n, func(i int) bool { return i%3 == 0 })
	got, pages := queryAll(t, s, "SELECT * FROM devices WHERE tags.location.region = 'US'", 7)
	if !slices.Equal(got, us) {
		t.Errorf("US devices: got %d %q…, want %d", len(got), got[:min(5, len(got))], len(us))
	}
	for i, p := range pages {
		if p > 7 || p < 7 && i != len(pages)-1 {
			t.Errorf("pages %v: a page other than the last is short", pages)
			break
		}
	}

	// Every device, default page 100: the last page has no continuation.
	if got, pages = queryAll(t, s, "select * from devices", 0); len(got) != n || !slices.Equal(pages, []int{100, 100, 50}) {
		t.Errorf("all devices: %d in pages %v", len(got), pages)
	}
	// A page size over the maximum is the maximum: one page.
	if got, pages = queryAll(t, s, "SELECT * FROM devices", 5000); len(got) != n || len(pages) != 1 {
		t.Errorf("page size 5000: %d in pages %v", len(got), pages)
	}
	// The last device filling a page ends the query.
	if _, pages = queryAll(t, s, "SELECT * FROM devices WHERE deviceId = 'dev-249'", 1); !slices.Equal(pages, []int{1}) {
		t.Errorf("last device: pages %v", pages)
	}
	// A page filled before the last device continues, perhaps to an empty page.
	if got, pages = queryAll(t, s, "SELECT * FROM devices WHERE deviceId IN ['dev-001', 'dev-002']", 1); !slices.Equal(got, []string{"dev-001", "dev-002"}) || !slices.Equal(pages, []int{1, 1, 0}) {
		t.Errorf("two matches by one: %q in pages %v", got, pages)
	}

	// The twin of a page is the twin GET /twins shows.
	res, err := s.Query(ctx, queryHub, "SELECT * FROM devices WHERE deviceId = 'DEV-007'", "", 10)
	if err != nil || len(res.Twins) != 1 || res.ItemType != "Twin" || res.Continuation != "" {
		t.Fatalf("DEV-007: %+v, %v", res, err)
	}
	want, err := s.ServiceTwin(ctx, queryHub, "DEV-007")
	if err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(res.Twins[0])
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("query twin\n%s\nGET twin\n%s", g, w)
	}
	if res.Twins[0].Status != dps.DeviceDisabled || res.Twins[0].StatusReason != "lost" {
		t.Errorf("DEV-007: %+v", res.Twins[0])
	}

	for _, c := range []struct {
		q    string
		want []string
	}{
		{"SELECT COUNT() FROM devices", []string{`{"numberOfDevices":250}`}},
		{"SELECT COUNT() AS pending FROM devices WHERE properties.reported.telemetryConfig.status = 'Pending'", []string{`{"pending":50}`}},
		{"SELECT COUNT() AS n FROM devices WHERE status = 'disabled' AND statusReason = 'lost'", []string{`{"n":1}`}},
		{"SELECT COUNT() AS n FROM devices WHERE tags.n >= 240 OR properties.desired.interval = 3 AND tags.location.region = 'US'", []string{`{"n":"`}},
		{"SELECT COUNT() AS n FROM devices WHERE connectionState = 'Connected'", []string{`{"n":0}`}},
		{"SELECT COUNT() AS n FROM devices WHERE deviceId = 'dev-007'", []string{`{"n":0}`}}, // IDs are case-sensitive
		{"SELECT deviceId, tags.location.region FROM devices WHERE tags.n < 4", []string{
			`{"deviceId":"dev-000","region":"US"}`, `{"deviceId":"dev-001","region":"EU"}`, `{"deviceId":"dev-002","region":"EU"}`, `{"deviceId":"dev-003","region":"US"}`}},
		{"SELECT deviceId AS id, properties.reported.telemetryConfig.status AS s FROM devices WHERE tags.n IN [9, 10]", []string{
			`{"id":"dev-009"}`, `{"id":"dev-010","s":"Pending"}`}},
	} {
		got, _ := queryAll(t, s, c.q, 3)
		if c.want[0] == `{"n":"` { // computed
			k := 0
			for i := range n {
				if i >= 240 || i%10 == 3 && i%3 == 0 {
					k++
				}
			}
			c.want = []string{fmt.Sprintf(`{"n":%d}`, k)}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.q, got, c.want)
		}
	}

	// Refusals.
	for q, tok := range map[string]string{
		"SELECT * FROM devices WHERE STARTSWITH(deviceId, 'dev')": "",
		"SELECT * FROM devices.modules":                           "",
		"SELECT * FROM devices":                                   "bm90IGEgdG9rZW4",
		"SELECT deviceId FROM devices":                            "%%%",
	} {
		if _, err := s.Query(ctx, queryHub, q, tok, 10); dps.KindOf(err) != dps.KindInvalid {
			t.Errorf("%s (token %q): %v", q, tok, err)
		}
	}
}

// BenchmarkQuery is a query over 10,000 devices on SQLite: COUNT() with a
// condition on tags and reported properties (every device read and
// evaluated), and one page of 1,000 twins of SELECT * with a condition.
func BenchmarkQuery(b *testing.B) {
	db := dpstest.NewSQLite(b)
	s := seedQueryHub(b, db, 10000)
	ctx := context.Background()
	b.Run("count", func(b *testing.B) {
		for b.Loop() {
			res, err := s.Query(ctx, queryHub, "SELECT COUNT() AS n FROM devices WHERE tags.location.region = 'US' AND properties.reported.telemetryConfig.status = 'Pending'", "", 0)
			if err != nil || string(res.Rows[0]) != `{"n":667}` {
				b.Fatal(res.Rows, err)
			}
		}
	})
	b.Run("page1000", func(b *testing.B) {
		for b.Loop() {
			res, err := s.Query(ctx, queryHub, "SELECT * FROM devices WHERE tags.location.region = 'EU'", "", 1000)
			if err != nil || len(res.Twins) != 1000 {
				b.Fatal(len(res.Twins), err)
			}
		}
	})
}
