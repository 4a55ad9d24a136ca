package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// healthcheckTimeout bounds one dpsd --healthcheck request.
const healthcheckTimeout = 5 * time.Second

// healthcheck is dpsd --healthcheck: it asks the admin listener of the
// configuration (the file, if any, and the DPSD_… variables, as dpsd
// itself would read them) for /readyz and returns nil only for a 200. It
// is the container image's HEALTHCHECK: a scratch image has no curl.
func healthcheck(ctx context.Context, path string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(path, getenv)
	if err != nil {
		return err
	}
	u, err := readyzURL(cfg.Listen.Admin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	// No proxy: the admin listener is this machine's (or this container's).
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "ready (%s)\n", u)
	return nil
}

// readyzURL is the /readyz URL of the admin listener at addr; a listener
// on every address ("", 0.0.0.0, ::) is asked on 127.0.0.1: Go's listener
// on :: takes IPv4 too, and a container may have no IPv6 loopback.
func readyzURL(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("healthcheck: listen.admin is empty: there is no admin listener to ask")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("healthcheck: listen.admin %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0", "::":
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}
