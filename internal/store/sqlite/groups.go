package sqlite

import (
	"context"
	"fmt"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
	"github.com/opendps/dps/internal/store/groupcache"
)

// GroupsVersion returns a number that changes whenever any enrollment
// group is created, replaced or deleted, through any handle on the
// database (triggers bump it in the writing transaction; migration 0005).
// One indexed read.
func (db *DB) GroupsVersion(ctx context.Context) (int64, error) {
	st, err := db.stmt(ctx, `SELECT version FROM groups_version WHERE id = 1`)
	if err != nil {
		return 0, err
	}
	var v int64
	if err := st.QueryRowContext(ctx).Scan(&v); err != nil {
		return 0, translate(fmt.Errorf("sqlite: read groups version: %w", err))
	}
	return v, nil
}

// groupSet returns the decoded groups, current as of this call (see groupcache).
func (db *DB) groupSet(ctx context.Context) (*groupcache.Set, error) {
	return db.groups.Get(ctx, db.GroupsVersion, func(ctx context.Context) ([]dps.Group, error) {
		return listDocs(ctx, db, docs.DecodeGroup, "groups", `SELECT doc FROM groups ORDER BY id`)
	})
}

// Group returns an enrollment group by ID (any case), from the decoded groups.
func (db *DB) Group(ctx context.Context, id string) (dps.Group, error) {
	s, err := db.groupSet(ctx)
	if err != nil {
		return dps.Group{}, err
	}
	if g, ok := s.Group(id); ok {
		return g, nil
	}
	return dps.Group{}, docs.NotFound("enrollment group", id)
}

// Groups returns every enrollment group using the given attestation type
// ("" for all), ordered by ID, from the decoded groups. Callers must not
// modify the groups returned: they are shared.
func (db *DB) Groups(ctx context.Context, t dps.AttestationType) ([]dps.Group, error) {
	s, err := db.groupSet(ctx)
	if err != nil {
		return nil, err
	}
	return s.OfType(t), nil
}
