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
hub ceiling, "dpsd --ceiling", derives them from the key it prints).`,
		Example: `  dpsctl bench hub --hub-connection-string "$HUB_CS" --mqtt-address 127.0.0.1:8883 --ca-file dps-data/tls/ca.pem \
      --devices 1000 --in-flight 1 --duration 20s
  dpsctl bench hub --hub localhost --group-key QUFBQUFBQUFBQUFBQUFBQUFBQUE= --mqtt-address 127.0.0.1:28883 \
      --ca-file dps-data/tls/ca.pem --devices 1000 --duration 20s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if devices <= 0 {
				return errors.New("--devices must be positive")
			}
			if o.Address == "" {
				return errors.New("--mqtt-address is required")
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
			if connectionString != "" {
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
			if o.Host == "" || o.GroupKey == "" {
				return errors.New("give --hub-connection-string, or --hub and --group-key")
			}
			if !sf.json() {
				o.Progress = cmd.ErrOrStderr()
			}
			s, err := bench.RunHub(ctx, o)
			if err != nil {
				return err
			}
			if sf.json() {
				if err := printJSON(cmd.OutOrStdout(), s); err != nil {
					return err
				}
			} else {
				fmt.Fprint(cmd.OutOrStdout(), s)
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
