// Package groupcache keeps a store's enrollment groups decoded in memory,
// never stale: every symmetric-key registration of an unknown device and
// every X.509 group device scans them, and decoding them per request (on
// PostgreSQL, reading them all) is what made a flood of bogus requests
// slow for everyone.
//
// Freshness comes from the store's groups version, a counter its database
// bumps in the transaction of every write to the groups table (a trigger,
// so even a write by hand counts). Each lookup reads that one row and
// decodes the groups again only when it moved, so a group created, changed
// or deleted through another handle or node is honoured on the next request.
package groupcache

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/opendps/dps"
)

// Set is every enrollment group at one groups version. It is shared:
// callers must not modify it or the groups in it.
type Set struct {
	version int64
	all     []dps.Group // ordered by ID
	byID    map[string]int
	byType  map[dps.AttestationType][]dps.Group
}

// Version is the groups version the set was read at (or after).
func (s *Set) Version() int64 { return s.version }

// All returns every group, ordered by ID.
func (s *Set) All() []dps.Group { return s.all }

// OfType returns the groups using attestation type t ("" for all),
// ordered by ID: what a store's Groups answers.
func (s *Set) OfType(t dps.AttestationType) []dps.Group {
	if t == "" {
		return s.all
	}
	return s.byType[t]
}

// Group returns the group with ID id (any case).
func (s *Set) Group(id string) (dps.Group, bool) {
	i, ok := s.byID[dps.FoldID(id)]
	if !ok {
		return dps.Group{}, false
	}
	return s.all[i], true
}

func newSet(version int64, all []dps.Group) *Set {
	s := &Set{version: version, all: slices.Clip(all), byID: make(map[string]int, len(all)), byType: map[dps.AttestationType][]dps.Group{}}
	for i, g := range all {
		s.byID[dps.FoldID(g.ID)] = i
		s.byType[g.Attestation.Type] = append(s.byType[g.Attestation.Type], g)
	}
	for t, gs := range s.byType {
		s.byType[t] = slices.Clip(gs) // a caller's append must not write into the set
	}
	return s
}

// Cache holds the latest Set. The zero value is ready to use.
type Cache struct {
	mu  sync.Mutex // one reload at a time; the others wait for it
	cur atomic.Pointer[Set]
}

// Get returns the groups, current as of the call: version reads the
// store's groups version, and load (reading every group) runs only when
// the version differs from the cached set's.
func (c *Cache) Get(ctx context.Context, version func(context.Context) (int64, error), load func(context.Context) ([]dps.Group, error)) (*Set, error) {
	v, err := version(ctx)
	if err != nil {
		return nil, err
	}
	if s := c.cur.Load(); s != nil && s.version == v {
		return s, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Another caller may have reloaded meanwhile; read the version again
	// under the lock, so the set stored is labelled with the newest one.
	if v, err = version(ctx); err != nil {
		return nil, err
	}
	if s := c.cur.Load(); s != nil && s.version == v {
		return s, nil
	}
	// The groups are read after the version: they are at least as new as
	// v, so a set is never older than its label. (Equality, not order, is
	// compared: a database restored to an older version is reloaded too.)
	all, err := load(ctx)
	if err != nil {
		return nil, err
	}
	s := newSet(v, all)
	c.cur.Store(s)
	return s, nil
}
