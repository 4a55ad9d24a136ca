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

	"github.com/opendps/dps/internal/ceiling"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/mqttapi"
)

// runCeiling serves the device API through the real HTTPS and MQTT
// adapters, with a registrar that does no authentication, storage or
// allocation: the ceiling benchmarks are compared with. Its MQTT listener
// also serves the built-in hubs' device protocol through the real hub
// service and broker over a store (ceiling.HubStore) that accepts every
// device ID with a key derived from ceiling.GroupKey and acknowledges
// telemetry without storing it: the hub telemetry ceiling.
func runCeiling(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	s := &server{cfg: cfg, log: newLogger(cfg.Log, stderr)}
	tlsCfg, err := s.tlsConfig()
	if err != nil {
		return err
	}
	defer s.stopCerts()
	reg := &ceiling.Registrar{}
	retry := time.Duration(cfg.RetryAfterSeconds) * time.Second
	ln, err := net.Listen("tcp", cfg.Listen.HTTPS)
	if err != nil {
		return fmt.Errorf("listen.https %s: %w", cfg.Listen.HTTPS, err)
	}
	srv := &http.Server{Handler: httpapi.New(httpapi.Options{Registrar: reg, RetryAfter: retry}), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("https listener stopped", "err", err)
		}
	}()
	fmt.Fprintf(stdout, "dpsd benchmark ceiling (no authentication, storage or allocation)\n  Device endpoint:     https://localhost (HTTPS %s)\n", ln.Addr())
	if cfg.Listen.MQTT != "" {
		hub := iothub.New(iothub.Options{Store: ceiling.NewHubStore(), Hubs: cfg.builtInHubs(), Node: cfg.NodeID, Logger: s.log})
		b, err := mqttapi.Listen(cfg.Listen.MQTT, mqttapi.BrokerOptions{Adapter: &mqttapi.Adapter{Registrar: reg, RetryAfter: retry}, TLSConfig: tlsCfg,
			Logger: s.log, HandshakeTimeout: cfg.Limits.TLSHandshakeTimeout, ConnectTimeout: cfg.Limits.HeaderTimeout, Hub: hub})
		if err != nil {
			return fmt.Errorf("listen.mqtt %s: %w", cfg.Listen.MQTT, err)
		}
		defer b.Close()
		b.Serve()
		fmt.Fprintf(stdout, "  MQTT endpoint:       mqtts://localhost (TLS %s)\n", b.Addr())
	}
	if s.caFile != "" {
		fmt.Fprintf(stdout, "  CA certificate:      %s\n", s.caFile)
	}
	if cfg.Listen.MQTT != "" {
		fmt.Fprintf(stdout, "  Linked hubs:         %s (hub ceiling on the MQTT endpoint: any device ID, its key derived from %s, telemetry not stored)\n",
			strings.Join(cfg.builtInHubs(), ", "), ceiling.GroupKey)
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
