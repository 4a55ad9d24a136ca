package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certExpiryWarning is how long before its expiry dpsd warns about the
// server certificate (at start and daily).
const certExpiryWarning = 30 * 24 * time.Hour

// certReloadCheck is how often, at most, a TLS handshake looks at the
// certificate files' modification times.
const certReloadCheck = 2 * time.Second

// certSource serves the server certificate of the HTTPS and MQTT
// listeners (tls.Config.GetCertificate) and re-reads its files when they
// change on disk: a handshake stats them at most every certReloadCheck and
// a changed pair that loads replaces the one served. Connections already
// open keep theirs; a pair that does not load (the certificate written,
// the key not yet) is logged once and the old one serves until the files
// change again.
type certSource struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time
	// renew, when set, renews a generated certificate (pki.Ensure); the
	// daily check calls it.
	renew func(now time.Time) error

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     fileStamp // of the files cert was read from
	nextCheck time.Time
}

// fileStamp is what tells a file changed: modification time and size.
type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

func stampOf(certFile, keyFile string) (fileStamp, error) {
	c, err := os.Stat(certFile)
	if err != nil {
		return fileStamp{}, err
	}
	k, err := os.Stat(keyFile)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{certMod: c.ModTime(), keyMod: k.ModTime(), certSize: c.Size(), keySize: k.Size()}, nil
}

// loadServerCert reads a certificate and key pair and refuses a
// certificate that has expired or is not valid yet, naming the file and
// the date. soon reports that it expires within certExpiryWarning.
func loadServerCert(certFile, keyFile string, now time.Time) (cert *tls.Certificate, soon bool, err error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, false, fmt.Errorf("tls.certFile/tls.keyFile (%s, %s): %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, false, fmt.Errorf("tls.certFile %s: %w", certFile, err)
		}
	}
	leaf := pair.Leaf
	if now.After(leaf.NotAfter) {
		return nil, false, fmt.Errorf("tls.certFile %s: the server certificate expired on %s; replace it (or remove tls.certFile to use a generated one)",
			certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, false, fmt.Errorf("tls.certFile %s: the server certificate is not valid before %s", certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return &pair, now.Add(certExpiryWarning).After(leaf.NotAfter), nil
}

// newCertSource loads the pair (refusing an expired certificate) and warns
// when it expires within 30 days.
func newCertSource(certFile, keyFile string, log *slog.Logger, now func() time.Time) (*certSource, error) {
	stamp, err := stampOf(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls.certFile/tls.keyFile: %w", err)
	}
	cert, soon, err := loadServerCert(certFile, keyFile, now())
	if err != nil {
		return nil, err
	}
	c := &certSource{certFile: certFile, keyFile: keyFile, log: log, now: now, cert: cert, stamp: stamp, nextCheck: now().Add(certReloadCheck)}
	if soon {
		c.warnExpiry(cert)
	}
	return c, nil
}

func (c *certSource) warnExpiry(cert *tls.Certificate) {
	left := cert.Leaf.NotAfter.Sub(c.now())
	c.log.Warn("tls: the server certificate expires soon; replace the file (dpsd reloads it without a restart)",
		"file", c.certFile, "not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "days_left", int(left.Hours()/24))
}

// Leaf is the certificate served now.
func (c *certSource) Leaf() *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert.Leaf
}

// GetCertificate is the listeners' tls.Config.GetCertificate.
func (c *certSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); !now.Before(c.nextCheck) {
		c.nextCheck = now.Add(certReloadCheck)
		c.reloadLocked(now)
	}
	return c.cert, nil
}

// reloadLocked re-reads the files when their stamp changed.
func (c *certSource) reloadLocked(now time.Time) {
	stamp, err := stampOf(c.certFile, c.keyFile)
	if err != nil || stamp == c.stamp {
		return
	}
	cert, soon, err := loadServerCert(c.certFile, c.keyFile, now)
	if err != nil {
		c.log.Error("tls: the changed certificate files do not load; still serving the previous certificate", "err", err)
		c.stamp = stamp // logged once per change, not per handshake
		return
	}
	c.cert, c.stamp = cert, stamp
	c.log.Info("tls: server certificate reloaded", "file", c.certFile, "subject", cert.Leaf.Subject.String(),
		"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	if soon {
		c.warnExpiry(cert)
	}
}

// check is the daily check: renew a generated certificate when due, pick
// up changed files, and warn when the certificate served expires within
// 30 days.
func (c *certSource) check() {
	now := c.now()
	if c.renew != nil {
		if err := c.renew(now); err != nil {
			c.log.Error("tls: renewing the generated server certificate failed", "err", err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reloadLocked(now)
	c.nextCheck = now.Add(certReloadCheck)
	if now.Add(certExpiryWarning).After(c.cert.Leaf.NotAfter) {
		c.warnExpiry(c.cert)
	}
}

// run checks daily until ctx ends.
func (c *certSource) run(ctx context.Context) {
	t := time.NewTicker(24 * time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.check()
		}
	}
}

// goUntilClose runs f until the returned function is called, which waits
// for f to return.
func goUntilClose(f func(context.Context)) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(ctx)
	}()
	return func() { cancel(); <-done }
}
