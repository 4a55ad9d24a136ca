package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/opendps/dps/internal/route"
	"github.com/opendps/dps/internal/route/webhook"
	"github.com/opendps/dps/internal/x509attest"
)

// checkConfig is dpsd --check-config: the configuration and the files it
// names (TLS certificate and key, webhook CA and client certificate, CRL
// files, routing endpoints' TLS and credentials files), without opening
// the store or a listener. It prints "configuration OK", or every problem
// found, one a line, and returns an error.
func checkConfig(path string, getenv func(string) string, stdout, stderr io.Writer, now time.Time) error {
	cfg, err := loadConfig(path, getenv)
	var problems []string
	if err != nil {
		problems = append(problems, splitJoined(err)...)
	}
	warnings, fileErrs := checkFiles(cfg, now)
	if m, err := cfg.Manifest.load(getenv); err != nil { // manifest.go
		fileErrs = append(fileErrs, err)
	} else if err := cfg.checkManifestHubs(m); err != nil {
		fileErrs = append(fileErrs, err)
	}
	for _, e := range fileErrs {
		problems = append(problems, splitJoined(e)...)
	}
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, p)
		}
		return fmt.Errorf("configuration %s: %d problem(s)", displayPath(path), len(problems))
	}
	fmt.Fprintln(stdout, "configuration OK")
	return nil
}

func displayPath(path string) string {
	if path == "" {
		return "(embedded defaults)"
	}
	return path
}

// splitJoined makes one line of each error errors.Join joined.
func splitJoined(err error) []string {
	var out []string
	for l := range strings.Lines(err.Error()) {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// checkFiles reads every file cfg names, as start would. A certificate
// that expires within 30 days is a warning, an expired one a problem.
func checkFiles(cfg Config, now time.Time) (warnings []string, errs []error) {
	if cfg.TLS.CertFile != "" && cfg.TLS.KeyFile != "" {
		cert, soon, err := loadServerCert(cfg.TLS.CertFile, cfg.TLS.KeyFile, now)
		switch {
		case err != nil:
			errs = append(errs, err)
		case soon:
			warnings = append(warnings, fmt.Sprintf("tls.certFile %s: the server certificate expires on %s (within 30 days)",
				cfg.TLS.CertFile, cert.Leaf.NotAfter.UTC().Format(time.RFC3339)))
		}
	}
	if (cfg.Webhook.ClientCertFile == "") == (cfg.Webhook.ClientKeyFile == "") {
		if _, err := webhookHTTPClient(cfg.Webhook); err != nil {
			errs = append(errs, err)
		}
	}
	if len(cfg.X509.CRLFiles) > 0 {
		if _, err := x509attest.LoadCRLs(cfg.X509.CRLFiles); err != nil {
			errs = append(errs, fmt.Errorf("x509.crlFiles: %s", strings.Join(splitJoined(err), "; ")))
		}
	}
	for i, h := range cfg.LinkedHubs {
		for j, e := range h.Endpoints {
			key := fmt.Sprintf("linkedHubs[%d].endpoints[%d] (%s)", i, j, e.Name)
			if (e.CertFile == "") != (e.KeyFile == "") {
				continue // validate said so
			}
			var err error
			if e.Type == "webhook" {
				_, err = webhook.TLSConfig(e.CAFile, e.CertFile, e.KeyFile)
			} else {
				_, err = route.TLSFiles{CAFile: e.CAFile, CertFile: e.CertFile, KeyFile: e.KeyFile}.Config()
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", key, err))
			}
			if e.Creds != "" {
				if _, err := os.ReadFile(e.Creds); err != nil {
					errs = append(errs, fmt.Errorf("%s.creds: %w", key, err))
				}
			}
		}
	}
	return warnings, errs
}
