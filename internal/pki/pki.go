// Package pki generates the TLS material dpsd uses when none is configured:
// a local CA (ECDSA P-256) and a server certificate it signs, kept as PEM
// files in the data directory. Devices trust the CA file.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Files are the paths of generated TLS material.
type Files struct {
	CACert     string
	CAKey      string
	ServerCert string
	ServerKey  string
}

// FilesIn returns the standard paths under dir.
func FilesIn(dir string) Files {
	return Files{
		CACert:     filepath.Join(dir, "ca.pem"),
		CAKey:      filepath.Join(dir, "ca-key.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server-key.pem"),
	}
}

// Ensure makes sure dir holds a CA and a server certificate valid for
// hosts (DNS names or IP addresses) for at least 30 more days, creating or
// renewing what is missing. The CA is kept across renewals.
func Ensure(dir string, hosts []string, now time.Time) (Files, error) {
	f := FilesIn(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return f, err
	}
	caCert, caKey, err := loadPair(f.CACert, f.CAKey)
	if err != nil || now.Add(30*24*time.Hour).After(caCert.NotAfter) {
		caCert, caKey, err = newCA(now)
		if err != nil {
			return f, err
		}
		if err := writePair(f.CACert, f.CAKey, caCert, caKey); err != nil {
			return f, err
		}
		os.Remove(f.ServerCert)
	}
	srv, _, err := loadPair(f.ServerCert, f.ServerKey)
	if err == nil && covers(srv, hosts) && now.Add(30*24*time.Hour).Before(srv.NotAfter) && srv.CheckSignatureFrom(caCert) == nil {
		return f, nil
	}
	srv, key, err := Issue(caCert, caKey, hosts, now, 825*24*time.Hour, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return f, err
	}
	return f, writePair(f.ServerCert, f.ServerKey, srv, key)
}

func covers(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if c.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func newCA(now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "dps local CA", Organization: []string{"dps"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

// Issue signs a new ECDSA P-256 leaf for hosts with the given extended key usage.
func Issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string, now time.Time, validity time.Duration, eku ...x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	cn := "dps"
	if len(hosts) > 0 {
		cn = hosts[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  eku,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func loadPair(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, errors.New("pki: key is not ECDSA")
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	return c, key, err
}

func writePair(certFile, keyFile string, c *x509.Certificate, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return writeFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644)
}

// writeFile writes atomically (temp file + rename).
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}
