package iothub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/twin"
)

// BenchmarkQueryTags100k is issue 21's tag query: 100,000 devices of one
// hub in a durable SQLite store (created through the store's PutHubDevice,
// 32 at a time), each with tags {"site": …, "floor": …}, 100 of them at
// site 'x'; SELECT * FROM devices WHERE tags.site = 'x' runs through
// Service.Query, the path of POST /devices/query: every device read from
// the store in pages, its twin decoded and the condition evaluated. One
// op is one query answering the 100 twins in one page (x-ms-max-item-count
// 1,000); count is SELECT COUNT() with the same condition.
func BenchmarkQueryTags100k(b *testing.B) {
	const n, every = 100_000, 1000
	db := dpstest.NewSQLite(b)
	ctx := context.Background()
	s := iothub.New(iothub.Options{Store: db, Hubs: []string{queryHub}, Now: func() time.Time { return t0 }})
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < n; i += 32 {
				site := fmt.Sprintf("s%03d", i%every)
				if i%every == 0 {
					site = "x"
				}
				tw, err := twin.New(json.RawMessage(fmt.Sprintf(`{"tags":{"site":%q,"floor":%d},"properties":{"desired":{"interval":%d}}}`, site, i%7, i%10)), t0)
				if err == nil {
					id := fmt.Sprintf("dev-%06d", i)
					d := dps.HubDevice{Hub: queryHub, DeviceID: id, GenerationID: "g" + id, Updated: t0,
						Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="}}
					if d.LiveTwin, err = json.Marshal(tw); err == nil {
						_, err = db.PutHubDevice(ctx, d)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	b.Logf("%d devices created in %s", n, time.Since(start).Round(time.Millisecond))
	const text = "SELECT * FROM devices WHERE tags.site = 'x'"
	b.Run("select", func(b *testing.B) {
		for b.Loop() {
			res, err := s.Query(ctx, queryHub, text, "", 1000)
			if err != nil || len(res.Twins) != n/every || res.Continuation != "" {
				b.Fatal(len(res.Twins), res.Continuation, err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
	})
	b.Run("count", func(b *testing.B) {
		for b.Loop() {
			res, err := s.Query(ctx, queryHub, "SELECT COUNT() AS n FROM devices WHERE tags.site = 'x'", "", 0)
			if err != nil || string(res.Rows[0]) != fmt.Sprintf(`{"n":%d}`, n/every) {
				b.Fatal(res.Rows, err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
	})
}
