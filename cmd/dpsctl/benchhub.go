package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/bench"
	"github.com/spf13/cobra"
)

func newBenchHub(sf *svcFlags) *cobra.Command {
	var (
		o                        bench.HubOptions
		connectionString, prefix string
		devices                  int
		idle, handshakeOnly      bool
		twin                     bool
		hold                     time.Duration
		sources                  []string
		pid, samples, svcFlight  int
	)
	cmd := &cobra.Command{
		Use:   "hub",
		Short: "Connect N MQTT devices to a built-in hub and report telemetry messages/s and PUBACK latency",
		Long: `bench hub creates --devices device identities on a built-in hub through its registry API
(with --hub-connection-string; their keys derived from --group-key, or from a random key), connects
them over TLS MQTT, and has each publish QoS 1 telemetry of --payload-size bytes with at most
--in-flight messages unacknowledged, until --messages were sent in all or --duration passed. It
prints the messages acknowledged (PUBACK: durable in the hub's event log) per second and the
PUBACK latency. --rate paces the sends to that many messages/s in all. Without a connection
string the devices are not created: give the --group-key the hub derives their keys from (the
hub ceiling, "dpsd --ceiling", derives them from the key it prints).

--idle opens the --devices connections (TLS, MQTT CONNECT) --connect-concurrency at a time,
holds them idle for --hold and reports connections/s until all were up, the connect latency,
how many were still open at the end and, with --pid, the server's VmRSS and VmHWM. It raises
its own open-file limit to fit. --source-addresses spreads the connections over local
addresses (one address has only the ephemeral port range's ports towards one listener).
--handshake-only stops each connection after its TLS handshake: the TLS-handshake ceiling of
the same listener (dpsd closes them after limits.headerTimeout).

--twin connects the devices and, for --duration each, has every device patch its reported
properties and then read its twin, one request at a time; then makes --samples desired
updates through the service API (PATCH /twins/{id}, --service-in-flight at a time), timed until
the device is notified, and --samples direct methods (POST /twins/{id}/methods), timed until the
service gets the device's 200. It needs --hub-connection-string.`,
		Example: `  dpsctl bench hub --hub-connection-string "$HUB_CS" --mqtt-address 127.0.0.1:8883 --ca-file dps-data/tls/ca.pem \
      --devices 1000 --in-flight 1 --duration 20s
  dpsctl bench hub --hub localhost --group-key QUFBQUFBQUFBQUFBQUFBQUFBQUE= --mqtt-address 127.0.0.1:28883 \
      --ca-file dps-data/tls/ca.pem --devices 1000 --duration 20s
  dpsctl bench hub --idle --hub-connection-string "$HUB_CS" --mqtt-address 127.0.0.1:8883 --ca-file dps-data/tls/ca.pem \
      --devices 50000 --source-addresses 127.0.0.1,127.0.0.2 --hold 30s --pid "$(pidof dpsd)"
  dpsctl bench hub --twin --hub-connection-string "$HUB_CS" --mqtt-address 127.0.0.1:8883 --ca-file dps-data/tls/ca.pem \
      --devices 1000 --duration 10s --samples 2000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if devices <= 0 {
				return errors.New("--devices must be positive")
			}
			if o.Address == "" {
				return errors.New("--mqtt-address is required")
			}
			if idle && twin {
				return errors.New("--idle and --twin are different runs: give one")
			}
			if handshakeOnly && !idle {
				return errors.New("--handshake-only is a mode of --idle")
			}
			if twin && connectionString == "" {
				return errors.New("--twin needs --hub-connection-string (desired updates and methods go through the service API)")
			}
			if idle {
				if err := raiseFileLimit(uint64(devices) + 4096); err != nil && !sf.json() {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v\n", err)
				}
			}
			hc, err := sf.tls.client(30 * time.Second)
			if err != nil {
				return err
			}
			o.TLS = hc.Transport.(*http.Transport).TLSClientConfig
			if prefix == "" {
				prefix = fmt.Sprintf("bench-hub-%d", time.Now().Unix())
			}
			for i := range devices {
				o.IDs = append(o.IDs, fmt.Sprintf("%s-%06d", prefix, i))
			}
			if connectionString != "" && !handshakeOnly {
				if o.GroupKey == "" {
					k := make([]byte, 32)
					rand.Read(k)
					o.GroupKey = base64.StdEncoding.EncodeToString(k)
				}
				hub, err := createBenchDevices(ctx, connectionString, o.Host, sf.endpoint, sf, o.GroupKey, o.IDs)
				if err != nil {
					return err
				}
				if o.Host == "" {
					o.Host = hub
				}
			}
			if handshakeOnly && o.Host == "" {
				if connectionString == "" {
					return errors.New("give --hub or --hub-connection-string")
				}
				c, err := hubClient(connectionString, "", sf.endpoint, sf.tls)
				if err != nil {
					return err
				}
				o.Host = c.HostName
			}
			if o.Host == "" || (o.GroupKey == "" && !handshakeOnly) {
				return errors.New("give --hub-connection-string, or --hub and --group-key")
			}
			if !sf.json() {
				o.Progress = cmd.ErrOrStderr()
			}
			print := func(s fmt.Stringer) error {
				if sf.json() {
					return printJSON(cmd.OutOrStdout(), s)
				}
				_, err := fmt.Fprint(cmd.OutOrStdout(), s)
				return err
			}
			switch {
			case idle:
				s, err := bench.RunConnect(ctx, bench.ConnectOptions{Address: o.Address, Host: o.Host, GroupKey: o.GroupKey, IDs: o.IDs, TLS: o.TLS,
					SourceAddresses: sources, Concurrency: o.ConnectConcurrency, HandshakeOnly: handshakeOnly, Hold: hold, PID: pid, Progress: o.Progress})
				if err != nil {
					return err
				}
				if err := print(s); err != nil {
					return err
				}
				if s.Connected < s.Devices || s.StillOpen < s.Connected {
					return fmt.Errorf("%d of %d devices did not connect, %d closed while held", s.Devices-s.Connected, s.Devices, s.Connected-s.StillOpen)
				}
				return nil
			case twin:
				if o.Duration <= 0 {
					return errors.New("--twin needs --duration")
				}
				c, err := hubClient(connectionString, o.Host, sf.endpoint, sf.tls)
				if err != nil {
					return err
				}
				// Kept-alive service connections, one per call in flight.
				c.HTTP.Transport.(*http.Transport).MaxIdleConnsPerHost = svcFlight
				call := func(ctx context.Context, method, path string, body []byte) ([]byte, error) {
					b, _, err := c.HubCall(ctx, method, path, nil, body)
					return b, err
				}
				s, err := bench.RunTwin(ctx, bench.TwinOptions{Address: o.Address, Host: o.Host, GroupKey: o.GroupKey, IDs: o.IDs, TLS: o.TLS,
					ConnectConcurrency: o.ConnectConcurrency, Duration: o.Duration, Samples: samples, ServiceInFlight: svcFlight, Service: call, Progress: o.Progress})
				if err != nil {
					return err
				}
				if err := print(s); err != nil {
					return err
				}
				if s.Connected < s.Devices || len(s.Failures) > 0 {
					return fmt.Errorf("%d of %d devices did not connect, failures: %v", s.Devices-s.Connected, s.Devices, s.Failures)
				}
				return nil
			}
			s, err := bench.RunHub(ctx, o)
			if err != nil {
				return err
			}
			if err := print(s); err != nil {
				return err
			}
			if s.Connected < s.Devices || len(s.Failed) > 0 {
				return fmt.Errorf("%d of %d devices did not connect, %d messages failed", s.Devices-s.Connected, s.Devices, s.Sent-s.Acknowledged)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&connectionString, "hub-connection-string", "", "a hub access policy's connection string with RegistryWrite, to create the devices")
	f.StringVar(&o.Host, "hub", "", "the hub's host name (default: the connection string's HostName)")
	f.StringVar(&o.Address, "mqtt-address", "", "host:port of dpsd's MQTT endpoint")
	f.StringVar(&o.GroupKey, "group-key", "", "base64 key the device keys are derived from (default with a connection string: random)")
	f.StringVar(&prefix, "prefix", "", "device ID prefix (default bench-hub-<time>)")
	f.IntVar(&devices, "devices", 1000, "devices to connect")
	f.IntVar(&o.InFlight, "in-flight", 1, "unacknowledged messages per device")
	f.IntVar(&o.PayloadBytes, "payload-size", 1024, "bytes of message body")
	f.IntVar(&o.Messages, "messages", 0, "messages to send in all (0: until --duration)")
	f.DurationVar(&o.Duration, "duration", 0, "how long to send (0: until --messages)")
	f.Float64Var(&o.Rate, "rate", 0, "messages/s in all (0: as fast as acknowledged)")
	f.IntVar(&o.ConnectConcurrency, "connect-concurrency", 32, "connects and creates under way")
	f.BoolVar(&idle, "idle", false, "connect the devices and hold them idle: connections/s, connect latency, server memory")
	f.BoolVar(&handshakeOnly, "handshake-only", false, "with --idle: stop each connection after its TLS handshake (the listener's handshake ceiling)")
	f.DurationVar(&hold, "hold", 10*time.Second, "with --idle: how long to hold the connections once all are up")
	f.StringSliceVar(&sources, "source-addresses", nil, "with --idle: local IP addresses to connect from, in turn (e.g. 127.0.0.1,127.0.0.2)")
	f.IntVar(&pid, "pid", 0, "with --idle: the server's process ID, to read its VmRSS and VmHWM from /proc")
	f.BoolVar(&twin, "twin", false, "reported PATCH and twin GET per second, desired-update notification and direct-method latency")
	f.IntVar(&samples, "samples", 1000, "with --twin: desired updates and direct methods to time, each")
	f.IntVar(&svcFlight, "service-in-flight", 4, "with --twin: service API calls under way")
	return cmd
}

// createBenchDevices creates the identities through the hub's registry
// API, 16 at a time, with keys derived from groupKey, and returns the hub's
// host name.
func createBenchDevices(ctx context.Context, cs, hubName, endpoint string, sf *svcFlags, groupKey string, ids []string) (string, error) {
	c, err := hubClient(cs, hubName, endpoint, sf.tls)
	if err != nil {
		return "", err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, 16)
	)
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			key, err := device.DeriveKey(groupKey, id)
			if err == nil {
				b, _ := json.Marshal(map[string]any{"deviceId": id,
					"authentication": map[string]any{"type": "sas", "symmetricKey": map[string]string{"primaryKey": key, "secondaryKey": key}}})
				_, _, err = c.HubCall(ctx, "PUT", devicePath(id), nil, b)
			}
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("create device %s: %w", id, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return c.HostName, first
}
