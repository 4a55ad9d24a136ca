package sqlite

import (
	"errors"

	"github.com/opendps/dps"
	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// translate turns the SQLite errors that mean "the database cannot serve
// now, retry later" into KindUnavailable, so clients get 503 with
// Retry-After and readiness fails: a full disk, an I/O error (including a
// file-size limit), a lock held by another process beyond busy_timeout, a
// file that became read-only, no memory. Other errors are returned as they
// are (KindInternal unless they already are a dps error).
func translate(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*dps.Error](err); ok {
		return err
	}
	se, ok := errors.AsType[*msqlite.Error](err)
	if !ok {
		return err
	}
	msg := ""
	switch se.Code() & 0xff { // the primary result code
	case sqlite3.SQLITE_FULL:
		msg = "the database disk is full; retry later"
	case sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN:
		msg = "the database cannot be read or written (I/O error); retry later"
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		msg = "the database is busy; retry later"
	case sqlite3.SQLITE_READONLY:
		msg = "the database is read-only; retry later"
	case sqlite3.SQLITE_NOMEM:
		msg = "the database is out of memory; retry later"
	default:
		return err
	}
	return &dps.Error{Kind: dps.KindUnavailable, Message: msg, Err: err}
}
