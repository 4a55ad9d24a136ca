// Package x509attest checks an X.509 device's TLS client chain against
// enrollments: an individual enrollment's certificate (by SHA-256
// thumbprint), or a group's signing certificate or verified CA, with the
// chain built only from what the device sent. It also checks certificate
// revocation lists. It imports only the domain and the standard library.
package x509attest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
)

// CheckLeaf checks the device certificate itself: the subject CN must be
// the registration ID (compared case-insensitively) and the certificate
// must be within its validity period.
func CheckLeaf(leaf *x509.Certificate, registrationID string, now time.Time) error {
	if !strings.EqualFold(leaf.Subject.CommonName, registrationID) {
		return fmt.Errorf("certificate CN %q is not the registration ID %q", leaf.Subject.CommonName, registrationID)
	}
	return validAt(leaf, now)
}

func validAt(c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("certificate %q is not valid before %s", c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("certificate %q expired at %s", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// MatchesLeaf reports whether leaf is one of the enrolled certificates
// (PEM or base64 DER), by SHA-256 thumbprint.
func MatchesLeaf(leaf *x509.Certificate, enrolled ...string) bool {
	want := sha256.Sum256(leaf.Raw)
	for _, e := range enrolled {
		if e == "" {
			continue
		}
		c, err := dps.ParseCertificate(e)
		if err != nil {
			continue
		}
		if sha256.Sum256(c.Raw) == want {
			return true
		}
	}
	return false
}

// Chain verifies the device chain (leaf first, then the intermediates the
// device sent) up to anchor, for client authentication, with every link
// within its validity period. It returns the verified chain (leaf … anchor).
func Chain(chain []*x509.Certificate, anchor *x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("no device certificate")
	}
	roots := x509.NewCertPool()
	roots.AddCert(anchor)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if bytes.Equal(leaf.Raw, anchor.Raw) {
		return nil, errors.New("the device certificate is the group's certificate itself")
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	var firstErr error
	for _, ch := range chains {
		ok := true
		for _, c := range ch {
			if err := validAt(c, now); err != nil {
				ok = false
				if firstErr == nil {
					firstErr = err
				}
			}
		}
		if ok {
			return ch, nil
		}
	}
	return nil, firstErr
}

// CRLs holds certificate revocation lists read from files; Reload re-reads
// files that changed. It is safe for concurrent use.
type CRLs struct {
	files []string
	mu    sync.RWMutex // guards lists and mtimes
	lists map[string]*x509.RevocationList
	mtime map[string]time.Time
}

// LoadCRLs reads CRL files (PEM or DER).
func LoadCRLs(files []string) (*CRLs, error) {
	c := &CRLs{files: files, lists: map[string]*x509.RevocationList{}, mtime: map[string]time.Time{}}
	return c, c.Reload()
}

// Reload re-reads every file whose modification time changed.
func (c *CRLs) Reload() error {
	if c == nil {
		return nil
	}
	var errs []error
	for _, f := range c.files {
		st, err := os.Stat(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.mu.RLock()
		same := c.mtime[f].Equal(st.ModTime())
		c.mu.RUnlock()
		if same {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if p, _ := pem.Decode(b); p != nil {
			b = p.Bytes
		}
		l, err := x509.ParseRevocationList(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		c.mu.Lock()
		c.lists[f], c.mtime[f] = l, st.ModTime()
		c.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Revoked reports whether any certificate of a verified chain (leaf …
// anchor) is listed in a CRL signed by its issuer (the next certificate of
// the chain).
func (c *CRLs) Revoked(chain []*x509.Certificate) (bool, string) {
	if c == nil {
		return false, ""
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for i := 0; i+1 < len(chain); i++ {
		cert, issuer := chain[i], chain[i+1]
		for _, l := range c.lists {
			if !bytes.Equal(l.RawIssuer, cert.RawIssuer) || l.CheckSignatureFrom(issuer) != nil {
				continue
			}
			for _, e := range l.RevokedCertificateEntries {
				if e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
					return true, fmt.Sprintf("certificate %q (serial %s) is revoked by the CRL of %q", cert.Subject.CommonName, cert.SerialNumber.Text(16), issuer.Subject.CommonName)
				}
			}
		}
	}
	return false, ""
}
