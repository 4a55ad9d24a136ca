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

// Certificate issuance: issuing CAs, credential policies and the
// certificates issued (migration 0015). The CAs' keys arrive sealed; the
// store keeps them as given.

const caColumns = `name, etag, key_type, chain, sealed_key, created, updated`

func scanCA(row interface{ Scan(...any) error }) (dps.IssuingCA, error) {
	var c dps.IssuingCA
	var keyType, chain string
	var created, updated int64
	if err := row.Scan(&c.Name, &c.ETag, &keyType, &chain, &c.SealedKey, &created, &updated); err != nil {
		return c, err
	}
	c.KeyType, c.Created, c.Updated = dps.KeyType(keyType), time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	var err error
	c.Chain, err = docs.DecodeChain(chain)
	return c, err
}

// IssuingCA returns an issuing CA (name in any case); KindNotFound if none.
func (db *DB) IssuingCA(ctx context.Context, name string) (dps.IssuingCA, error) {
	st, err := db.stmt(ctx, `SELECT `+caColumns+` FROM issuing_cas WHERE id = ?`)
	if err != nil {
		return dps.IssuingCA{}, err
	}
	c, err := scanCA(st.QueryRowContext(ctx, dps.FoldID(name)))
	if errors.Is(err, sql.ErrNoRows) {
		return c, docs.NotFound("issuing CA", name)
	}
	return c, translate(err)
}

// IssuingCAs returns every issuing CA, ordered by folded name.
func (db *DB) IssuingCAs(ctx context.Context) ([]dps.IssuingCA, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT `+caColumns+` FROM issuing_cas ORDER BY id`)
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: list issuing CAs: %w", err))
	}
	defer rows.Close()
	var out []dps.IssuingCA
	for rows.Next() {
		c, err := scanCA(rows)
		if err != nil {
			return nil, translate(err)
		}
		out = append(out, c)
	}
	return out, translate(rows.Err())
}

// PutIssuingCA creates or replaces an issuing CA under the ETag rules of
// docs.CheckPut and returns it as stored.
func (db *DB) PutIssuingCA(ctx context.Context, c dps.IssuingCA, ifMatch string) (dps.IssuingCA, error) {
	chain, err := docs.EncodeChain(c.Chain)
	if err != nil {
		return c, err
	}
	id := dps.FoldID(c.Name)
	err = db.exec(ctx, func(tx *sql.Tx) error {
		var etag string
		var created int64
		err := tx.QueryRow(`SELECT etag, created FROM issuing_cas WHERE id = ?`, id).Scan(&etag, &created)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		exists := err == nil
		if err := docs.CheckPut(exists, etag, "issuing CA", c.Name, ifMatch); err != nil {
			return err
		}
		now := time.Now().UTC()
		c.ETag, c.Updated, c.Created = docs.NewETag(), now, now
		if exists {
			c.Created = time.Unix(0, created).UTC()
		}
		_, err = tx.Exec(`INSERT INTO issuing_cas (id, `+caColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, etag = excluded.etag, key_type = excluded.key_type,
			chain = excluded.chain, sealed_key = excluded.sealed_key, updated = excluded.updated`,
			id, c.Name, c.ETag, string(c.KeyType), chain, c.SealedKey, c.Created.UnixNano(), c.Updated.UnixNano())
		return err
	})
	return c, err
}

// DeleteIssuingCA deletes an issuing CA under the ETag rule of
// docs.CheckDelete; KindConflict while a credential policy names it.
func (db *DB) DeleteIssuingCA(ctx context.Context, name, ifMatch string) error {
	id := dps.FoldID(name)
	return db.exec(ctx, func(tx *sql.Tx) error {
		var etag string
		err := tx.QueryRow(`SELECT etag FROM issuing_cas WHERE id = ?`, id).Scan(&etag)
		if errors.Is(err, sql.ErrNoRows) {
			return docs.NotFound("issuing CA", name)
		}
		if err != nil {
			return err
		}
		if err := docs.CheckDelete(etag, "issuing CA", name, ifMatch); err != nil {
			return err
		}
		var policy string
		switch err := tx.QueryRow(`SELECT name FROM credential_policies WHERE ca = ? LIMIT 1`, id).Scan(&policy); {
		case err == nil:
			return docs.CAInUse(name, policy)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		_, err = tx.Exec(`DELETE FROM issuing_cas WHERE id = ?`, id)
		return err
	})
}

const policyColumns = `name, ca, etag, validity_days, key_types, subject, created, updated`

func scanPolicy(row interface{ Scan(...any) error }) (dps.CredentialPolicy, error) {
	var p dps.CredentialPolicy
	var keyTypes, subject string
	var created, updated int64
	if err := row.Scan(&p.Name, &p.CertificateAuthority, &p.ETag, &p.ValidityDays, &keyTypes, &subject, &created, &updated); err != nil {
		return p, err
	}
	p.KeyTypes, p.Subject = docs.DecodeKeyTypes(keyTypes), dps.SubjectSource(subject)
	p.Created, p.Updated = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	return p, nil
}

// policyQuery reads policies with their CA's name as the CA has it.
const policyQuery = `SELECT p.name, COALESCE(c.name, p.ca), p.etag, p.validity_days, p.key_types, p.subject, p.created, p.updated
	FROM credential_policies p LEFT JOIN issuing_cas c ON c.id = p.ca`

// CredentialPolicy returns a credential policy (name in any case);
// KindNotFound if none.
func (db *DB) CredentialPolicy(ctx context.Context, name string) (dps.CredentialPolicy, error) {
	st, err := db.stmt(ctx, policyQuery+` WHERE p.id = ?`)
	if err != nil {
		return dps.CredentialPolicy{}, err
	}
	p, err := scanPolicy(st.QueryRowContext(ctx, dps.FoldID(name)))
	if errors.Is(err, sql.ErrNoRows) {
		return p, docs.NotFound("credential policy", name)
	}
	return p, translate(err)
}

// CredentialPolicies returns every credential policy, ordered by folded
// name.
func (db *DB) CredentialPolicies(ctx context.Context) ([]dps.CredentialPolicy, error) {
	rows, err := db.read.QueryContext(ctx, policyQuery+` ORDER BY p.id`)
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: list credential policies: %w", err))
	}
	defer rows.Close()
	var out []dps.CredentialPolicy
	for rows.Next() {
		p, err := scanPolicy(rows)
		if err != nil {
			return nil, translate(err)
		}
		out = append(out, p)
	}
	return out, translate(rows.Err())
}

// PutCredentialPolicy creates or replaces a credential policy under the
// ETag rules of docs.CheckPut; KindNotFound when its CA does not exist
// (checked in the same transaction).
func (db *DB) PutCredentialPolicy(ctx context.Context, p dps.CredentialPolicy, ifMatch string) (dps.CredentialPolicy, error) {
	id := dps.FoldID(p.Name)
	err := db.exec(ctx, func(tx *sql.Tx) error {
		var caName string
		err := tx.QueryRow(`SELECT name FROM issuing_cas WHERE id = ?`, dps.FoldID(p.CertificateAuthority)).Scan(&caName)
		if errors.Is(err, sql.ErrNoRows) {
			return docs.NotFound("issuing CA", p.CertificateAuthority)
		}
		if err != nil {
			return err
		}
		var etag string
		var created int64
		err = tx.QueryRow(`SELECT etag, created FROM credential_policies WHERE id = ?`, id).Scan(&etag, &created)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		exists := err == nil
		if err := docs.CheckPut(exists, etag, "credential policy", p.Name, ifMatch); err != nil {
			return err
		}
		now := time.Now().UTC()
		p.ETag, p.Updated, p.Created, p.CertificateAuthority = docs.NewETag(), now, now, caName
		if exists {
			p.Created = time.Unix(0, created).UTC()
		}
		_, err = tx.Exec(`INSERT INTO credential_policies (id, name, ca, etag, validity_days, key_types, subject, created, updated)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, ca = excluded.ca, etag = excluded.etag,
			validity_days = excluded.validity_days, key_types = excluded.key_types, subject = excluded.subject, updated = excluded.updated`,
			id, p.Name, dps.FoldID(caName), p.ETag, p.ValidityDays, docs.EncodeKeyTypes(p.KeyTypes), string(p.Subject), p.Created.UnixNano(), p.Updated.UnixNano())
		return err
	})
	return p, err
}

// DeleteCredentialPolicy deletes a credential policy under the ETag rule
// of docs.CheckDelete.
func (db *DB) DeleteCredentialPolicy(ctx context.Context, name, ifMatch string) error {
	return db.exec(ctx, func(tx *sql.Tx) error {
		var etag string
		err := tx.QueryRow(`SELECT etag FROM credential_policies WHERE id = ?`, dps.FoldID(name)).Scan(&etag)
		if errors.Is(err, sql.ErrNoRows) {
			return docs.NotFound("credential policy", name)
		}
		if err != nil {
			return err
		}
		if err := docs.CheckDelete(etag, "credential policy", name, ifMatch); err != nil {
			return err
		}
		_, err = tx.Exec(`DELETE FROM credential_policies WHERE id = ?`, dps.FoldID(name))
		return err
	})
}

const issuedColumns = `serial, ca, policy, registration_id, hub, device_name, operation_id, certificate, not_before, not_after, issued, revoked`

func scanIssued(row interface{ Scan(...any) error }) (dps.IssuedCertificate, error) {
	var c dps.IssuedCertificate
	var op sql.NullString
	var nb, na, issued, revoked int64
	if err := row.Scan(&c.SerialNumber, &c.CertificateAuthority, &c.Policy, &c.RegistrationID, &c.Hub, &c.DeviceID, &op, &c.Certificate, &nb, &na, &issued, &revoked); err != nil {
		return c, err
	}
	c.OperationID = op.String
	c.NotBefore, c.NotAfter, c.Issued = time.Unix(0, nb).UTC(), time.Unix(0, na).UTC(), time.Unix(0, issued).UTC()
	if revoked != 0 {
		c.Revoked = time.Unix(0, revoked).UTC()
	}
	return c, nil
}

// RecordIssuedCertificate stores the record of an issued certificate. When
// c names an operation that already has one, nothing new is stored and
// that one is returned: one operation gets one certificate, whoever signed
// first; when c is for another hub or device ID (a retried completion
// that moved the device), that one is re-pointed to c's. CertificateAuthority and Hub are stored folded (and read back
// so), matched in any case.
func (db *DB) RecordIssuedCertificate(ctx context.Context, c dps.IssuedCertificate) (dps.IssuedCertificate, error) {
	var op any
	if c.OperationID != "" {
		op = c.OperationID
	}
	out := c
	out.CertificateAuthority, out.Hub = dps.FoldID(c.CertificateAuthority), dps.FoldID(c.Hub)
	err := db.exec(ctx, func(tx *sql.Tx) error {
		if op != nil {
			prior, err := scanIssued(tx.QueryRow(`SELECT `+issuedColumns+` FROM issued_certificates WHERE operation_id = ?`, op))
			if err == nil {
				if prior.Hub != out.Hub || dps.FoldID(prior.DeviceID) != dps.FoldID(c.DeviceID) {
					// A retried completion moved the device: the
					// operation's certificate is its on the new hub.
					if _, err := tx.Exec(`UPDATE issued_certificates SET hub = ?, device_id = ?, device_name = ? WHERE serial = ?`,
						out.Hub, dps.FoldID(c.DeviceID), c.DeviceID, prior.SerialNumber); err != nil {
						return err
					}
					prior.Hub, prior.DeviceID = out.Hub, c.DeviceID
				}
				out = prior
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		_, err := tx.Exec(`INSERT INTO issued_certificates (serial, ca, policy, registration_id, hub, device_id, device_name, operation_id, certificate, not_before, not_after, issued, revoked)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)`,
			c.SerialNumber, dps.FoldID(c.CertificateAuthority), c.Policy, c.RegistrationID, dps.FoldID(c.Hub), dps.FoldID(c.DeviceID), c.DeviceID, op, c.Certificate,
			c.NotBefore.UnixNano(), c.NotAfter.UnixNano(), c.Issued.UnixNano())
		return err
	})
	return out, err
}

// IssuedCertificate returns the record of the certificate with a serial
// number (upper-case hex); KindNotFound if none.
func (db *DB) IssuedCertificate(ctx context.Context, serial string) (dps.IssuedCertificate, error) {
	st, err := db.stmt(ctx, `SELECT `+issuedColumns+` FROM issued_certificates WHERE serial = ?`)
	if err != nil {
		return dps.IssuedCertificate{}, err
	}
	c, err := scanIssued(st.QueryRowContext(ctx, serial))
	if errors.Is(err, sql.ErrNoRows) {
		return c, docs.NotFound("issued certificate", serial)
	}
	return c, translate(err)
}

// RevokeIssuedCertificates revokes, at at, every certificate issued to a
// device (hub and device ID in any case) that is not revoked yet and not
// expired, reporting how many.
func (db *DB) RevokeIssuedCertificates(ctx context.Context, hub, deviceID string, at time.Time) (int, error) {
	var n int64
	err := db.exec(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE issued_certificates SET revoked = ? WHERE hub = ? AND device_id = ? AND revoked = 0 AND not_after > ?`,
			at.UnixNano(), dps.FoldID(hub), dps.FoldID(deviceID), at.UnixNano())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}

// RevokedCertificates returns the revoked certificates of an issuing CA
// (name in any case) that have not expired at now, by serial number: what
// its CRL lists.
func (db *DB) RevokedCertificates(ctx context.Context, ca string, now time.Time) ([]dps.IssuedCertificate, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT `+issuedColumns+` FROM issued_certificates
		WHERE ca = ? AND revoked <> 0 AND not_after > ? ORDER BY serial`, dps.FoldID(ca), now.UnixNano())
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: list revoked certificates: %w", err))
	}
	defer rows.Close()
	var out []dps.IssuedCertificate
	for rows.Next() {
		c, err := scanIssued(rows)
		if err != nil {
			return nil, translate(err)
		}
		out = append(out, c)
	}
	return out, translate(rows.Err())
}
