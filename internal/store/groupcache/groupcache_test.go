package groupcache_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/groupcache"
)

func TestGetReloadsOnlyWhenTheVersionMoves(t *testing.T) {
	var version atomic.Int64
	var loads atomic.Int32
	groups := []dps.Group{
		{ID: "G-Sym", Settings: dps.Settings{Attestation: dps.Attestation{Type: dps.AttestationSymmetricKey}}},
		{ID: "g-x509", Settings: dps.Settings{Attestation: dps.Attestation{Type: dps.AttestationX509}}},
	}
	var c groupcache.Cache
	get := func() *groupcache.Set {
		t.Helper()
		s, err := c.Get(context.Background(),
			func(context.Context) (int64, error) { return version.Load(), nil },
			func(context.Context) ([]dps.Group, error) { loads.Add(1); return groups, nil })
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() { get() })
	}
	wg.Wait()
	if n := loads.Load(); n != 1 {
		t.Errorf("32 concurrent first calls loaded %d times, want 1", n)
	}
	s := get()
	if loads.Load() != 1 || len(s.All()) != 2 || len(s.OfType(dps.AttestationSymmetricKey)) != 1 {
		t.Errorf("set = %+v after %d loads", s.All(), loads.Load())
	}
	if g, ok := s.Group("g-sym"); !ok || g.ID != "G-Sym" {
		t.Errorf("Group(g-sym) = %+v, %v", g, ok)
	}
	if _, ok := s.Group("nope"); ok {
		t.Error("Group(nope) found")
	}
	// A caller appending to a returned slice does not write into the set.
	sym := s.OfType(dps.AttestationSymmetricKey)
	_ = append(sym, dps.Group{ID: "intruder"})
	if got := s.All(); got[1].ID != "g-x509" {
		t.Errorf("append to OfType wrote into the set: %v", got)
	}

	version.Add(1)
	groups = groups[:1]
	if s := get(); loads.Load() != 2 || len(s.All()) != 1 || s.Version() != 1 {
		t.Errorf("after a version change: %d groups, version %d, %d loads", len(s.All()), s.Version(), loads.Load())
	}
	version.Store(0) // a database restored to an older version is reloaded too
	if get(); loads.Load() != 3 {
		t.Errorf("after the version went back: %d loads, want 3", loads.Load())
	}
}
