package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Tx runs fn in one of the store's transactions, for tests.
func (db *DB) Tx(ctx context.Context, fn func(pgx.Tx) error) error { return db.tx(ctx, fn) }
