package storetest

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// BenchFactory makes a store for a benchmark.
type BenchFactory func(b *testing.B) Store

// RunBenchmarks measures the store operations on the registration hot
// path with the same workload for every store.
func RunBenchmarks(b *testing.B, newStore BenchFactory) {
	b.Run("CreateOperationWithDevice/parallel", func(b *testing.B) {
		s := newStore(b)
		var n atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(16) // many registrations in flight share commits
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				id := fmt.Sprintf("bench-%d", i)
				now := time.Now().UTC()
				o := dps.Operation{ID: "op-" + id, RegistrationID: id, Status: dps.StatusAssigned, Created: now, Updated: now,
					Result: &dps.Registration{RegistrationID: id, DeviceID: id, AssignedHub: "h.example.net", Status: dps.StatusAssigned, Created: now, Updated: now}}
				if _, err := s.CreateOperationWithDevice(ctx(), o, dps.HubDevice{Hub: "h.example.net", DeviceID: id, Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "a2V5"}}, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("AppendMessages/%d", n), func(b *testing.B) {
			s := newStore(b)
			batch := make([]dps.Message, n)
			for i := range batch {
				batch[i] = message("bench.example.net", fmt.Sprintf("dev-%d", i%8), fmt.Sprintf("m-%d", i))
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.AppendMessages(ctx(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
	b.Run("AppendMessages/parallel-64x1KB", func(b *testing.B) {
		// What the hub's devices do: 64 devices at once, each appending one
		// 1 KB message per call, as Service.Send stamps it.
		s := newStore(b)
		const writers = 64
		body := []byte(strings.Repeat(`{"temperature":21.5,"humidity":40}`, 31)[:1024])
		var next atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				dev := fmt.Sprintf("bench-dev-%d", w)
				for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
					m := dps.Message{Hub: "bench.example.net", DeviceID: dev, MessageID: fmt.Sprintf("m-%d", i),
						ContentType: "application/json", ContentEncoding: "utf-8", Properties: map[string]string{"n": "1"},
						System: map[string]string{"iothub-connection-device-id": dev, "iothub-connection-auth-generation-id": "638000000000000000",
							"iothub-connection-auth-method": `{"scope":"device","type":"sas","issuer":"iothub"}`, "iothub-message-source": "Telemetry"},
						Body: body}
					if _, err := s.AppendMessages(ctx(), []dps.Message{m}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("Enrollment/get", func(b *testing.B) {
		s := newStore(b)
		if _, err := s.PutEnrollment(ctx(), enr("bench-e"), ""); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Enrollment(ctx(), "bench-e"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Enrollment/miss", func(b *testing.B) {
		s := newStore(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Enrollment(ctx(), "nobody"); dps.KindOf(err) != dps.KindNotFound {
				b.Fatal(err)
			}
		}
	})
	b.Run("Operation/get", func(b *testing.B) {
		s := newStore(b)
		o := op("bench-op", "d")
		if _, err := s.CreateOperation(ctx(), o); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Operation(ctx(), "bench-op"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
