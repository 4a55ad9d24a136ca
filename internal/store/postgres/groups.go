package postgres

import (
	"context"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
	"github.com/opendps/dps/internal/store/groupcache"
)

// GroupsVersion returns a number that changes whenever any enrollment
// group is created, replaced or deleted, by any node (a trigger bumps it
// in the writing transaction; migration 0002). One indexed read.
func (db *DB) GroupsVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := db.pool.QueryRow(ctx, `SELECT version FROM groups_version WHERE id = 1`).Scan(&v); err != nil {
		return 0, translate(err)
	}
	return v, nil
}

// groupSet returns the decoded groups, current as of this call: one read
// of the groups version, and all groups only when another node (or this
// one) changed one since (see groupcache).
func (db *DB) groupSet(ctx context.Context) (*groupcache.Set, error) {
	return db.groups.Get(ctx, db.GroupsVersion, func(ctx context.Context) ([]dps.Group, error) {
		return listDocs(ctx, db.pool, docs.DecodeGroup, "groups", `SELECT doc FROM groups ORDER BY id`)
	})
}

// Groups returns every group using attestation type t ("" for all), ordered
// by ID, from the decoded groups. Callers must not modify the groups
// returned: they are shared.
func (db *DB) Groups(ctx context.Context, t dps.AttestationType) ([]dps.Group, error) {
	s, err := db.groupSet(ctx)
	if err != nil {
		return nil, err
	}
	return s.OfType(t), nil
}
