package allocation_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/allocation"
)

func hubs(weights ...int) []dps.LinkedHub {
	var hs []dps.LinkedHub
	for i, w := range weights {
		hs = append(hs, dps.LinkedHub{HostName: fmt.Sprintf("hub-%d.example.net", i), AllocationWeight: w, ApplyAllocationPolicy: true})
	}
	return hs
}

func TestHashedDistributionFollowsWeights(t *testing.T) {
	const n = 100_000
	hs := hubs(1, 2, 3, 4)
	total := 10.0
	counts := map[string]int{}
	for i := range n {
		h, _ := allocation.Pick(fmt.Sprintf("device-%06d", i), hs)
		counts[h.HostName]++
	}
	for _, h := range hs {
		want := float64(h.AllocationWeight) / total
		got := float64(counts[h.HostName]) / n
		if math.Abs(got-want) > 0.05*want {
			t.Errorf("%s: share %.4f, want %.4f ±5%%", h.HostName, got, want)
		}
	}
}

func TestHashedAddingHubMovesOnlyItsShare(t *testing.T) {
	const n = 100_000
	before := hubs(1, 1, 1)
	after := append(append([]dps.LinkedHub{}, before...), dps.LinkedHub{HostName: "hub-new.example.net", AllocationWeight: 1})
	moved, movedElsewhere := 0, 0
	for i := range n {
		id := fmt.Sprintf("device-%06d", i)
		a, _ := allocation.Pick(id, before)
		b, _ := allocation.Pick(id, after)
		if a.HostName != b.HostName {
			moved++
			if b.HostName != "hub-new.example.net" {
				movedElsewhere++
			}
		}
	}
	if movedElsewhere != 0 {
		t.Errorf("%d devices moved between old hubs; only moves to the new hub are expected", movedElsewhere)
	}
	if got, want := float64(moved)/n, 0.25; math.Abs(got-want) > 0.05*want {
		t.Errorf("moved share %.4f, want %.2f ±5%%", got, want)
	}
}

func TestHashedIsCaseInsensitiveAndDeterministic(t *testing.T) {
	hs := hubs(1, 1, 1, 1, 1)
	for i := range 1000 {
		id := fmt.Sprintf("Device-%d-ABC", i)
		a, _ := allocation.Pick(id, hs)
		b, _ := allocation.Pick(dps.FoldID(id), hs)
		rev := []dps.LinkedHub{hs[4], hs[3], hs[2], hs[1], hs[0]}
		c, _ := allocation.Pick(id, rev)
		if a.HostName != b.HostName || a.HostName != c.HostName {
			t.Fatalf("%s: %s / %s / %s", id, a.HostName, b.HostName, c.HostName)
		}
	}
}

func TestPolicies(t *testing.T) {
	ctx := context.Background()
	near := dps.LinkedHub{HostName: "near.example.net", AllocationWeight: 1, Location: "westeurope"}
	far := dps.LinkedHub{HostName: "far.example.net", AllocationWeight: 1000, Location: "eastus"}
	tests := []struct {
		name   string
		policy interface {
			Allocate(context.Context, dps.AllocationRequest) (dps.Assignment, error)
		}
		cands    []dps.LinkedHub
		wantHub  string
		wantFail bool
	}{
		{"ok/geo-near-first", allocation.GeoLatency{Location: "WestEurope"}, []dps.LinkedHub{far, near}, "near.example.net", false},
		{"ok/geo-fallback-hash", allocation.GeoLatency{Location: "mars"}, []dps.LinkedHub{far}, "far.example.net", false},
		{"ok/static-one", allocation.Static{}, []dps.LinkedHub{near}, "near.example.net", false},
		{"fail/static-two", allocation.Static{}, []dps.LinkedHub{near, far}, "", true},
		{"fail/static-none", allocation.Static{}, nil, "", true},
		{"fail/hashed-none", allocation.Hashed{}, nil, "", true},
		{"ok/hashed-one", allocation.Hashed{}, []dps.LinkedHub{far}, "far.example.net", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.policy.Allocate(ctx, dps.AllocationRequest{RegistrationID: "dev-1", Candidates: tt.cands})
			if tt.wantFail {
				var f *dps.AllocationFailure
				if !errors.As(err, &f) {
					t.Fatalf("err = %v, want *dps.AllocationFailure", err)
				}
				return
			}
			if err != nil || got.Hub != tt.wantHub {
				t.Fatalf("Allocate = %q, %v; want %q", got.Hub, err, tt.wantHub)
			}
		})
	}
}

func BenchmarkHashed(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("hubs=%d", n), func(b *testing.B) {
			ws := make([]int, n)
			for i := range ws {
				ws[i] = i%3 + 1
			}
			req := dps.AllocationRequest{RegistrationID: "device-0001", Candidates: hubs(ws...)}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := (allocation.Hashed{}).Allocate(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
