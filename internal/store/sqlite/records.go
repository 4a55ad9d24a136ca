package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

// getDoc reads one document and decodes it with decode (one of docs.Decode…).
func getDoc[T any](ctx context.Context, db *DB, decode func([]byte) (T, error), query, what, id string, args ...any) (T, error) {
	var v T
	var doc []byte
	st, err := db.stmt(ctx, query)
	if err != nil {
		return v, err
	}
	if err := st.QueryRowContext(ctx, args...).Scan(&doc); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return v, docs.NotFound(what, id)
		}
		return v, translate(fmt.Errorf("sqlite: read %s: %w", what, err))
	}
	v, err = decode(doc)
	if err != nil {
		return v, fmt.Errorf("sqlite: decode %s: %w", what, err)
	}
	return v, nil
}

func listDocs[T any](ctx context.Context, db *DB, decode func([]byte) (T, error), what, query string, args ...any) ([]T, error) {
	st, err := db.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: list %s: %w", what, err))
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var doc []byte
		if err := rows.Scan(&doc); err != nil {
			return nil, translate(fmt.Errorf("sqlite: list %s: %w", what, err))
		}
		v, err := decode(doc)
		if err != nil {
			return nil, fmt.Errorf("sqlite: decode %s: %w", what, err)
		}
		out = append(out, v)
	}
	return out, translate(rows.Err())
}

// checkPut enforces the ETag rules of a conditional write (docs.CheckPut)
// and returns the stored document, nil when there is none.
func checkPut(tx *sql.Tx, table, what, name, ifMatch string) (old []byte, err error) {
	var etag string
	err = tx.QueryRow(`SELECT etag, doc FROM `+table+` WHERE id = ?`, dps.FoldID(name)).Scan(&etag, &old)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	return old, docs.CheckPut(err == nil, etag, what, name, ifMatch)
}

func deleteRow(ctx context.Context, db *DB, table, what, id, ifMatch string) error {
	return db.exec(ctx, func(tx *sql.Tx) error {
		var etag string
		err := tx.QueryRow(`SELECT etag FROM `+table+` WHERE id = ?`, id).Scan(&etag)
		if errors.Is(err, sql.ErrNoRows) {
			return docs.NotFound(what, id)
		}
		if err != nil {
			return err
		}
		if err := docs.CheckDelete(etag, what, id, ifMatch); err != nil {
			return err
		}
		_, err = tx.Exec(`DELETE FROM `+table+` WHERE id = ?`, id)
		return err
	})
}

// Meta returns the instance-wide value stored under key, storing value first
// if none is there yet. Every caller sees the same winner.
func (db *DB) Meta(ctx context.Context, key, value string) (string, error) {
	err := db.exec(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, key, value)
		return err
	})
	if err != nil {
		return "", err
	}
	var v string
	if err := db.read.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v); err != nil {
		return "", translate(fmt.Errorf("sqlite: read meta: %w", err))
	}
	return v, nil
}

// Enrollment returns the individual enrollment for registrationID (any case).
func (db *DB) Enrollment(ctx context.Context, registrationID string) (dps.Enrollment, error) {
	return getDoc(ctx, db, docs.DecodeEnrollment, `SELECT doc FROM enrollments WHERE id = ?`, "enrollment", registrationID, dps.FoldID(registrationID))
}

// PutEnrollment creates or replaces an individual enrollment under the ETag
// rules of checkPut and returns it as stored (new ETag and timestamps).
func (db *DB) PutEnrollment(ctx context.Context, e dps.Enrollment, ifMatch string) (dps.Enrollment, error) {
	id := dps.FoldID(e.RegistrationID)
	err := db.exec(ctx, func(tx *sql.Tx) error {
		stored, err := checkPut(tx, "enrollments", "enrollment", e.RegistrationID, ifMatch)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		e.Updated, e.ETag, e.Created = now, docs.NewETag(), now
		if stored != nil {
			old, err := docs.DecodeEnrollment(stored)
			if err != nil {
				return err
			}
			e.Created = old.Created
		}
		doc, err := docs.EncodeEnrollment(e)
		if err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO enrollments (id, etag, doc) VALUES (?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET etag = excluded.etag, doc = excluded.doc`, id, e.ETag, doc)
		return err
	})
	return e, err
}

// DeleteEnrollment deletes an individual enrollment; ifMatch "" or "*" is
// unconditional.
func (db *DB) DeleteEnrollment(ctx context.Context, registrationID, ifMatch string) error {
	return deleteRow(ctx, db, "enrollments", "enrollment", dps.FoldID(registrationID), ifMatch)
}

// Enrollments returns up to limit enrollments after the continuation token,
// ordered by ID, and the token of the next page ("" on the last page).
func (db *DB) Enrollments(ctx context.Context, continuation string, limit int) ([]dps.Enrollment, string, error) {
	return page(ctx, db, docs.DecodeEnrollment, "enrollments", "", continuation, limit, func(e dps.Enrollment) string { return dps.FoldID(e.RegistrationID) })
}

func page[T any](ctx context.Context, db *DB, decode func([]byte) (T, error), table, groupID, continuation string, limit int, key func(T) string) ([]T, string, error) {
	after, err := docs.DecodeCursor(continuation)
	if err != nil {
		return nil, "", err
	}
	limit = docs.PageSize(limit)
	q := `SELECT doc FROM ` + table + ` WHERE id > ?`
	args := []any{after}
	if table == "registrations" && groupID != "" {
		q += ` AND group_id = ?`
		args = append(args, dps.FoldID(groupID))
	}
	q += ` ORDER BY id LIMIT ?`
	args = append(args, limit+1)
	items, err := listDocs(ctx, db, decode, table, q, args...)
	if err != nil {
		return nil, "", err
	}
	items, next := docs.Page(items, limit, key)
	return items, next, nil
}

// PutGroup creates or replaces an enrollment group under the ETag rules of checkPut.
func (db *DB) PutGroup(ctx context.Context, g dps.Group, ifMatch string) (dps.Group, error) {
	id := dps.FoldID(g.ID)
	err := db.exec(ctx, func(tx *sql.Tx) error {
		stored, err := checkPut(tx, "groups", "enrollment group", g.ID, ifMatch)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		g.Updated, g.ETag, g.Created = now, docs.NewETag(), now
		if stored != nil {
			old, err := docs.DecodeGroup(stored)
			if err != nil {
				return err
			}
			g.Created = old.Created
		}
		doc, err := docs.EncodeGroup(g)
		if err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO groups (id, attestation, etag, doc) VALUES (?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET attestation = excluded.attestation, etag = excluded.etag, doc = excluded.doc`,
			id, string(g.Attestation.Type), g.ETag, doc)
		return err
	})
	return g, err
}

// DeleteGroup deletes an enrollment group.
func (db *DB) DeleteGroup(ctx context.Context, id, ifMatch string) error {
	return deleteRow(ctx, db, "groups", "enrollment group", dps.FoldID(id), ifMatch)
}

// GroupsPage returns a page of enrollment groups.
func (db *DB) GroupsPage(ctx context.Context, continuation string, limit int) ([]dps.Group, string, error) {
	return page(ctx, db, docs.DecodeGroup, "groups", "", continuation, limit, func(g dps.Group) string { return dps.FoldID(g.ID) })
}

// Registration returns the registration record of registrationID (any case).
func (db *DB) Registration(ctx context.Context, registrationID string) (dps.Registration, error) {
	return getDoc(ctx, db, docs.DecodeRegistration, `SELECT doc FROM registrations WHERE id = ?`, "registration", registrationID, dps.FoldID(registrationID))
}

// DeleteRegistration deletes a registration record.
func (db *DB) DeleteRegistration(ctx context.Context, registrationID, ifMatch string) error {
	return deleteRow(ctx, db, "registrations", "registration", dps.FoldID(registrationID), ifMatch)
}

// Registrations returns a page of the registration records of an enrollment group.
func (db *DB) Registrations(ctx context.Context, groupID, continuation string, limit int) ([]dps.Registration, string, error) {
	if groupID == "" {
		return nil, "", &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "enrollment group ID is required"}
	}
	return page(ctx, db, docs.DecodeRegistration, "registrations", groupID, continuation, limit, func(r dps.Registration) string { return dps.FoldID(r.RegistrationID) })
}

// CreateOperation persists a new operation and returns it as stored. An
// operation that is already final with a registration result (assigned or
// failed: completed before it was accepted) writes its registration record
// in the same transaction. It fails with KindConflict if the ID exists.
func (db *DB) CreateOperation(ctx context.Context, op dps.Operation) (dps.Operation, error) {
	err := db.exec(ctx, func(tx *sql.Tx) error { return db.insertOperation(tx, &op) })
	return op, err
}

func (db *DB) insertOperation(tx *sql.Tx, op *dps.Operation) error {
	if err := db.putRegistration(tx, op); err != nil {
		return err
	}
	doc, err := docs.EncodeOperation(*op)
	if err != nil {
		return err
	}
	res, err := db.txExec(tx, qInsertOperation, op.ID, dps.FoldID(op.RegistrationID), string(op.Status), op.Created.UnixNano(), doc)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return &dps.Error{Kind: dps.KindConflict, Message: "operation already exists"}
	}
	return nil
}

// CreateOperationWithDevice creates an operation, its registration record
// and the hub device records it produced (put, and remove when the device
// moved between hubs) in one transaction.
func (db *DB) CreateOperationWithDevice(ctx context.Context, op dps.Operation, put dps.HubDevice, remove *dps.HubDevice) (dps.Operation, error) {
	put.ETag = docs.NewETag() // every write of a hub device record gets a new ETag
	ddoc, err := docs.EncodeHubDevice(put)
	if err != nil {
		return op, err
	}
	err = db.exec(ctx, func(tx *sql.Tx) error {
		if err := db.putDevices(tx, put, ddoc, remove); err != nil {
			return err
		}
		return db.insertOperation(tx, &op)
	})
	return op, err
}

// putDevices writes a device record, honouring put.Replaces, and removes
// the one it replaces, honouring remove.Replaces.
func (db *DB) putDevices(tx *sql.Tx, put dps.HubDevice, ddoc []byte, remove *dps.HubDevice) error {
	if put.Hub != "" { // none: the device's new identity is on a remote hub
		if err := db.checkReplaces(tx, put); err != nil {
			return docs.DeviceChanged(err)
		}
		if _, err := db.txExec(tx, qPutHubDevice, dps.FoldID(put.Hub), dps.FoldID(put.DeviceID), ddoc); err != nil {
			return err
		}
	}
	if remove != nil {
		if err := db.checkReplaces(tx, *remove); err != nil { // the record it was computed from, if remove says
			return docs.DeviceChanged(err)
		}
		if _, err := db.txExec(tx, qDeleteHubDevice, dps.FoldID(remove.Hub), dps.FoldID(remove.DeviceID)); err != nil {
			return err
		}
		if err := deleteCloudQueue(tx, remove.Hub, remove.DeviceID); err != nil {
			return err
		}
	}
	return nil
}

// putRegistration writes the registration record an operation produced
// (assigned or failed), with a new ETag. The result's ETag on entry is the
// ETag of the record it replaces ("" when there was none): if the record
// changed since (another operation of the same device won), nothing is
// written and the error is KindConflict, so the operation is computed again.
func (db *DB) putRegistration(tx *sql.Tx, op *dps.Operation) error {
	if op.Result == nil || (op.Status != dps.StatusAssigned && op.Status != dps.StatusFailed) {
		return nil
	}
	r := *op.Result
	prev := r.ETag
	r.ETag = docs.NewRegistrationETag()
	rdoc, err := docs.EncodeRegistration(r)
	if err != nil {
		return err
	}
	id := dps.FoldID(r.RegistrationID)
	var res sql.Result
	if prev == "" {
		res, err = db.txExec(tx, qInsertRegistration, id, dps.FoldID(r.EnrollmentGroupID), r.ETag, rdoc)
	} else {
		res, err = db.txExec(tx, qUpdateRegistration, dps.FoldID(r.EnrollmentGroupID), r.ETag, rdoc, id, prev)
	}
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errRegistrationChanged
	}
	op.Result = &r
	return nil
}

var errRegistrationChanged = &dps.Error{Kind: dps.KindConflict, Message: "the device's registration changed concurrently"}

// Operation returns an operation by ID.
func (db *DB) Operation(ctx context.Context, id string) (dps.Operation, error) {
	return getDoc(ctx, db, docs.DecodeOperation, `SELECT doc FROM operations WHERE id = ?`, "operation", id, id)
}

// CompleteOperation records an operation's final state and, when the
// operation produced a registration record (assigned or failed), writes that
// record, in one transaction. It returns the operation as stored (the
// record's new ETag set). Completing an already-final operation is a no-op
// that returns the stored operation, so a retried completion is harmless.
func (db *DB) CompleteOperation(ctx context.Context, op dps.Operation) (dps.Operation, error) {
	err := db.exec(ctx, func(tx *sql.Tx) error { return db.completeOperation(tx, &op, nil) })
	return op, err
}

// CompleteOperationWithDevice is CompleteOperation that also writes the hub
// device records the operation produced (put, and remove when the device
// moved), in the same transaction: if the registration record changed
// meanwhile (KindConflict), no device record is written either.
func (db *DB) CompleteOperationWithDevice(ctx context.Context, op dps.Operation, put dps.HubDevice, remove *dps.HubDevice) (dps.Operation, error) {
	put.ETag = docs.NewETag() // every write of a hub device record gets a new ETag
	ddoc, err := docs.EncodeHubDevice(put)
	if err != nil {
		return op, err
	}
	err = db.exec(ctx, func(tx *sql.Tx) error {
		return db.completeOperation(tx, &op, func() error { return db.putDevices(tx, put, ddoc, remove) })
	})
	return op, err
}

// completeOperation finishes an unfinished operation (and calls devices, if
// not nil, in the same transaction); a final one is returned as stored.
func (db *DB) completeOperation(tx *sql.Tx, op *dps.Operation, devices func() error) error {
	var status string
	var doc []byte
	if err := db.txQueryRow(tx, qOperationStatus, op.ID).Scan(&status, &doc); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return docs.NotFound("operation", op.ID)
		}
		return err
	}
	if dps.Status(status).Final() {
		stored, err := docs.DecodeOperation(doc)
		if err != nil {
			return err
		}
		*op = stored
		return nil
	}
	if err := db.putRegistration(tx, op); err != nil {
		return err
	}
	if devices != nil {
		if err := devices(); err != nil {
			return err
		}
	}
	doc, err := docs.EncodeOperation(*op)
	if err != nil {
		return err
	}
	_, err = db.txExec(tx, qCompleteOperation, string(op.Status), doc, op.ID)
	return err
}

// PendingOperations returns the operations still assigning, oldest first.
func (db *DB) PendingOperations(ctx context.Context) ([]dps.Operation, error) {
	return listDocs(ctx, db, docs.DecodeOperation, "operations", `SELECT doc FROM operations WHERE status = 'assigning' ORDER BY created`)
}

// DeleteOperationsBefore deletes up to Options.PruneBatch (by default
// docs.DefaultPruneBatch) final operations created before t and reports how
// many it deleted; the sweeper calls it again while there is more.
func (db *DB) DeleteOperationsBefore(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := db.exec(ctx, func(tx *sql.Tx) error {
		// In bounded batches: one huge delete would hold the writer (and every
		// registration waiting on it) for its whole duration.
		res, err := tx.Exec(`DELETE FROM operations WHERE id IN (SELECT id FROM operations WHERE created < ? AND status <> 'assigning' LIMIT ?)`, t.UnixNano(), db.pruneBatch)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// PutHubDevice records a device identity and returns it as written, with
// a new ETag. d.Replaces, when set, must be the ETag of the device's
// current record: KindNotFound when there is none, KindConflict when it
// has another ETag (nothing written).
func (db *DB) PutHubDevice(ctx context.Context, d dps.HubDevice) (dps.HubDevice, error) {
	d.ETag = docs.NewETag()
	doc, err := docs.EncodeHubDevice(d)
	if err != nil {
		return d, err
	}
	err = db.exec(ctx, func(tx *sql.Tx) error {
		if err := db.checkReplaces(tx, d); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO hub_devices (hub, device_id, doc) VALUES (?, ?, ?)
			ON CONFLICT (hub, device_id) DO UPDATE SET doc = excluded.doc`, dps.FoldID(d.Hub), dps.FoldID(d.DeviceID), doc)
		return err
	})
	d.Replaces = ""
	return d, err
}

// checkReplaces enforces a hub device write's precondition in tx.
func (db *DB) checkReplaces(tx *sql.Tx, d dps.HubDevice) error {
	if d.Replaces == "" {
		return nil
	}
	var cur []byte
	err := tx.QueryRow(`SELECT doc FROM hub_devices WHERE hub = ? AND device_id = ?`, dps.FoldID(d.Hub), dps.FoldID(d.DeviceID)).Scan(&cur)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	return docs.CheckReplaces(d, cur, err == nil)
}

// HubDevice returns a device identity recorded by the built-in hub connector.
func (db *DB) HubDevice(ctx context.Context, hub, deviceID string) (dps.HubDevice, error) {
	return getDoc(ctx, db, docs.DecodeHubDevice, `SELECT doc FROM hub_devices WHERE hub = ? AND device_id = ?`, "hub device", hub+"/"+deviceID, dps.FoldID(hub), dps.FoldID(deviceID))
}

// DeleteHubDevice removes a device identity and its C2D queue; deleting
// an absent one is not an error.
func (db *DB) DeleteHubDevice(ctx context.Context, hub, deviceID string) error {
	return db.exec(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM hub_devices WHERE hub = ? AND device_id = ?`, dps.FoldID(hub), dps.FoldID(deviceID)); err != nil {
			return err
		}
		return deleteCloudQueue(tx, hub, deviceID)
	})
}

// RemoveHubDevice removes the device identity d names (hub and device
// ID) and its C2D queue only if its record is the one d.Replaces names
// (its ETag; "" removes whatever it is): KindConflict when the record
// changed since; an absent one is not an error.
func (db *DB) RemoveHubDevice(ctx context.Context, d dps.HubDevice) error {
	return db.exec(ctx, func(tx *sql.Tx) error {
		switch err := db.checkReplaces(tx, d); {
		case dps.KindOf(err) == dps.KindNotFound:
			return nil // gone already
		case err != nil:
			return err
		}
		if _, err := db.txExec(tx, qDeleteHubDevice, dps.FoldID(d.Hub), dps.FoldID(d.DeviceID)); err != nil {
			return err
		}
		return deleteCloudQueue(tx, d.Hub, d.DeviceID)
	})
}

// CACertificate returns a CA certificate held by the instance (name in any case).
func (db *DB) CACertificate(ctx context.Context, name string) (dps.CACertificate, error) {
	return getDoc(ctx, db, docs.DecodeCACertificate, `SELECT doc FROM ca_certificates WHERE id = ?`, "CA certificate", name, dps.FoldID(name))
}

// CACertificates returns every CA certificate, ordered by name.
func (db *DB) CACertificates(ctx context.Context) ([]dps.CACertificate, error) {
	return listDocs(ctx, db, docs.DecodeCACertificate, "CA certificates", `SELECT doc FROM ca_certificates ORDER BY id`)
}

// PutCACertificate creates or replaces a CA certificate under the ETag
// rules of checkPut.
func (db *DB) PutCACertificate(ctx context.Context, c dps.CACertificate, ifMatch string) (dps.CACertificate, error) {
	id := dps.FoldID(c.Name)
	err := db.exec(ctx, func(tx *sql.Tx) error {
		stored, err := checkPut(tx, "ca_certificates", "CA certificate", c.Name, ifMatch)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		c.Updated, c.ETag, c.Created = now, docs.NewETag(), now
		if stored != nil {
			old, err := docs.DecodeCACertificate(stored)
			if err != nil {
				return err
			}
			c.Created = old.Created
		}
		doc, err := docs.EncodeCACertificate(c)
		if err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO ca_certificates (id, etag, doc) VALUES (?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET etag = excluded.etag, doc = excluded.doc`, id, c.ETag, doc)
		return err
	})
	return c, err
}

// DeleteCACertificate deletes a CA certificate.
func (db *DB) DeleteCACertificate(ctx context.Context, name, ifMatch string) error {
	return deleteRow(ctx, db, "ca_certificates", "CA certificate", dps.FoldID(name), ifMatch)
}

// PutChallenge stores the latest TPM challenge of a registration ID,
// replacing (invalidating) any earlier one.
func (db *DB) PutChallenge(ctx context.Context, c dps.Challenge) error {
	doc, err := docs.EncodeChallenge(c)
	if err != nil {
		return err
	}
	return db.exec(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO tpm_challenges (id, doc) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc`, dps.FoldID(c.RegistrationID), doc)
		return err
	})
}

// Challenge returns the latest TPM challenge of a registration ID.
func (db *DB) Challenge(ctx context.Context, registrationID string) (dps.Challenge, error) {
	return getDoc(ctx, db, docs.DecodeChallenge, `SELECT doc FROM tpm_challenges WHERE id = ?`, "TPM challenge", registrationID, dps.FoldID(registrationID))
}

// ConsumeChallenge deletes the challenge of a registration ID if its key is
// still key; it reports false when another challenge replaced it.
func (db *DB) ConsumeChallenge(ctx context.Context, registrationID string, key dps.Key) (bool, error) {
	var ok bool
	err := db.exec(ctx, func(tx *sql.Tx) error {
		var doc []byte
		err := tx.QueryRow(`SELECT doc FROM tpm_challenges WHERE id = ?`, dps.FoldID(registrationID)).Scan(&doc)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		c, err := docs.DecodeChallenge(doc)
		if err != nil {
			return err
		}
		if c.Key != key {
			return nil
		}
		_, err = tx.Exec(`DELETE FROM tpm_challenges WHERE id = ?`, dps.FoldID(registrationID))
		ok = err == nil
		return err
	})
	return ok, err
}

// ClaimOperation makes owner the owner of an unfinished operation until
// until, if nobody else holds an unexpired lease on it.
func (db *DB) ClaimOperation(ctx context.Context, id, owner string, until time.Time) (bool, error) {
	var ok bool
	err := db.exec(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE operations SET owner = ?, lease_until = ?
			WHERE id = ? AND status = 'assigning' AND (owner = '' OR owner = ? OR lease_until < ?)`,
			owner, until.UnixNano(), id, owner, time.Now().UnixNano())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		ok = n == 1
		return err
	})
	return ok, err
}

// ListHubDevices returns up to limit device identities of a hub whose
// folded device ID sorts after after's (folded; "" from the first), in
// that order: a listing resumes after the last device it returned.
func (db *DB) ListHubDevices(ctx context.Context, hub, after string, limit int) ([]dps.HubDevice, error) {
	return listDocs(ctx, db, docs.DecodeHubDevice, "hub devices", `SELECT doc FROM hub_devices WHERE hub = ? AND device_id > ? ORDER BY device_id LIMIT ?`,
		dps.FoldID(hub), dps.FoldID(after), docs.PageSize(limit))
}

// CountHubDevices returns how many device identities a hub has, and how
// many of them are disabled.
func (db *DB) CountHubDevices(ctx context.Context, hub string) (total, disabled int, err error) {
	err = db.read.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(json_extract(doc, '$.status') = 'disabled'), 0) FROM hub_devices WHERE hub = ?`, dps.FoldID(hub)).Scan(&total, &disabled)
	return total, disabled, translate(err)
}
