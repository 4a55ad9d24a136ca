package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
)

// bannerField is one line of the banner: its label in the text banner and
// its key in the JSON one.
type bannerField struct {
	label, key, value string
}

// bannerFields is what a user needs to connect: endpoints with their
// ports, the CA to trust, and the connection strings. A secret appears only
// when dpsd generated it; a configured one is named, never printed.
func (s *server) bannerFields() []bannerField {
	host := s.serviceHost()
	f := []bannerField{
		{"ID scope", "id_scope", s.idScope},
		{"Device endpoint", "device_endpoint", endpointURL("https", host, s.httpsLn.Addr(), "443") + " (HTTPS " + s.httpsLn.Addr().String() + ")"},
	}
	if s.mqtt != nil {
		f = append(f, bannerField{"MQTT endpoint", "mqtt_endpoint", endpointURL("mqtts", host, s.mqtt.Addr(), "8883") + " (TLS " + s.mqtt.Addr().String() + ")"})
	}
	if s.console != nil {
		f = append(f, bannerField{"Console", "console", endpointURL("https", host, s.httpsLn.Addr(), "443") + "/console/"})
	}
	if s.adminLn != nil {
		f = append(f, bannerField{"Admin", "admin", "http://" + s.adminLn.Addr().String() + "/healthz /readyz /metrics"})
	}
	if s.caFile != "" {
		abs, _ := filepath.Abs(s.caFile)
		f = append(f, bannerField{"CA certificate", "ca_file", abs + " (trust it on devices; Node: NODE_EXTRA_CA_CERTS)"})
	}
	conn := fmt.Sprintf("HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", host, s.owner.Name, s.owner.PrimaryKey)
	if !s.ownerGenerated {
		conn = fmt.Sprintf("HostName=%s;SharedAccessKeyName=%s (its key: accessPolicies[0].primaryKey of the configuration)", host, s.owner.Name)
	}
	f = append(f, bannerField{"Service connection", "service_connection", conn})
	var hubs []string
	for _, h := range s.cfg.LinkedHubs {
		kind := "remote"
		if h.BuiltIn() {
			kind = "built-in"
		}
		hubs = append(hubs, h.HostName+" ("+kind+")")
	}
	for _, h := range s.cfg.builtInHubs() {
		if p, ok := s.hubOwners[h]; ok { // generated: configured hub keys are not printed
			f = append(f, bannerField{"Hub connection", "hub_connection", fmt.Sprintf("HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", h, p.Name, p.PrimaryKey)})
		}
	}
	return append(f, bannerField{"Linked hubs", "linked_hubs", strings.Join(hubs, ", ")})
}

// endpointURL is scheme://host with the listener's port unless it is the
// scheme's default.
func endpointURL(scheme, host string, addr net.Addr, defaultPort string) string {
	_, port, err := net.SplitHostPort(addr.String())
	if err != nil || port == defaultPort {
		return scheme + "://" + host
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// printBanner writes the banner: lines of text, or with log.format json
// one JSON log record with the same fields (hub connection strings, one a
// built-in hub, as a list).
func (s *server) printBanner(w io.Writer) {
	fields := s.bannerFields()
	if strings.EqualFold(s.cfg.Log.Format, "json") {
		var attrs []slog.Attr
		var hubConns []string
		for _, f := range fields {
			if f.key == "hub_connection" {
				hubConns = append(hubConns, f.value)
				continue
			}
			attrs = append(attrs, slog.String(f.key, f.value))
		}
		if len(hubConns) > 0 {
			attrs = append(attrs, slog.Any("hub_connections", hubConns))
		}
		slog.New(slog.NewJSONHandler(w, nil)).LogAttrs(context.Background(), slog.LevelInfo, "dpsd is ready", attrs...)
		return
	}
	fmt.Fprintf(w, "dpsd is ready.\n")
	for _, f := range fields {
		fmt.Fprintf(w, "  %-20s %s\n", f.label+":", f.value)
	}
}
