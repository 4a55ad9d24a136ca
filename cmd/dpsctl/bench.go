package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/opendps/dps/internal/bench"
	"github.com/opendps/dps/internal/wire"
	"github.com/opendps/dps/webhook"
	"github.com/spf13/cobra"
)

func newBench() *cobra.Command {
	var (
		o              bench.Options
		sf             svcFlags
		freshTLS, echo bool
		groupID        string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Play N devices against a running dpsd and report registrations/s and latency",
		Long: `bench registers --devices devices with keys derived from an enrollment group key, --concurrency
at a time, and prints completed and failed registrations, registrations/s and the register→assigned
latency. Give --group-key, or a service connection string to let bench create a group. Run the same
load against "dpsd --ceiling" (no authentication, storage or allocation) to compare with a ceiling.`,
		Example: `  dpsctl bench --endpoint https://127.0.0.1:8443 --id-scope 0ne00000001 --connection-string "$CS" \
      --devices 5000 --concurrency 64 --ca-file dps-data/tls/ca.pem`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			hc, err := sf.tls.client(30 * time.Second)
			if err != nil {
				return err
			}
			o.TLS = hc.Transport.(*http.Transport).TLSClientConfig
			o.FreshConnections = freshTLS
			if o.GroupKey == "" {
				key, err := benchGroup(ctx, &sf, groupID, echo)
				if err != nil {
					return fmt.Errorf("create the bench group (or give --group-key): %w", err)
				}
				o.GroupKey = key
			}
			if !sf.json() {
				o.Progress = cmd.ErrOrStderr()
			}
			s, err := bench.Run(ctx, o)
			if err != nil {
				return err
			}
			if sf.json() {
				return printJSON(cmd.OutOrStdout(), s)
			}
			fmt.Fprint(cmd.OutOrStdout(), s)
			if s.Completed < s.Devices {
				return fmt.Errorf("%d of %d registrations did not complete", s.Devices-s.Completed, s.Devices)
			}
			return nil
		},
	}
	sf.add(cmd)
	cmd.AddCommand(newBenchHub(&sf)) // benchhub.go
	f := cmd.Flags()
	f.StringVar(&o.Endpoint, "device-endpoint", "https://localhost", "device endpoint")
	f.StringVar(&o.MQTTAddress, "mqtt-address", "", "host:port of the MQTT endpoint (default: the device endpoint's host, port 8883)")
	f.StringVar(&o.IDScope, "id-scope", "", "ID scope")
	f.StringVar(&o.GroupKey, "group-key", "", "enrollment group key (base64) to derive device keys from")
	f.StringVar(&groupID, "group", "", "enrollment group to create (default bench-<time>)")
	f.StringVar(&o.Transport, "transport", "https", "https or mqtt")
	f.IntVar(&o.Devices, "devices", 1000, "devices to register")
	f.IntVar(&o.Concurrency, "concurrency", 64, "registrations in flight")
	f.BoolVar(&freshTLS, "fresh-connections", false, "a new TLS connection per device (as real devices); default: kept-alive connections")
	f.IntVar(&o.PayloadBytes, "payload-size", 0, "bytes of device payload to send")
	f.DurationVar(&o.PollInterval, "poll-interval", 0, "wait between polls (0: poll at once)")
	f.BoolVar(&o.HonourRetryAfter, "honour-retry-after", false, "wait the server's Retry-After between polls")
	f.BoolVar(&echo, "echo-webhook", false, "use custom allocation with a built-in echo webhook on 127.0.0.1 (dpsd needs webhook.allowHTTP)")
	return cmd
}

// benchGroup creates a symmetric-key group through the service API and
// returns its primary key.
func benchGroup(ctx context.Context, sf *svcFlags, id string, echo bool) (string, error) {
	c, err := sf.client()
	if err != nil {
		return "", err
	}
	if id == "" {
		id = fmt.Sprintf("bench-%d", time.Now().Unix())
	}
	g := wire.EnrollmentGroup{EnrollmentGroupID: id, Attestation: &wire.AttestationMechanism{Type: "symmetricKey"}}
	if echo {
		url, err := startEcho()
		if err != nil {
			return "", err
		}
		g.AllocationPolicy = "custom"
		g.CustomAllocationDefinition = &wire.CustomAllocationDefinition{WebhookURL: url, APIVersion: "2021-10-01"}
	}
	out, err := c.PutGroup(ctx, g, "*")
	if err != nil {
		return "", err
	}
	if out.Attestation == nil || out.Attestation.SymmetricKey == nil || out.Attestation.SymmetricKey.PrimaryKey == "" {
		return "", errors.New("the service did not return the group's key")
	}
	return out.Attestation.SymmetricKey.PrimaryKey, nil
}

// startEcho serves a webhook that assigns the first offered hub and echoes
// the device's payload back.
func startEcho() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	h := webhook.Handler(func(_ context.Context, req *webhook.Request) (*webhook.Response, error) {
		p, _ := json.Marshal(map[string]json.RawMessage{"echo": req.DeviceRuntimeContext.Payload})
		return &webhook.Response{IoTHubHostName: req.LinkedHubs[0], Payload: p}, nil
	}, webhook.HandlerOptions{})
	go http.Serve(ln, h)
	return "http://" + ln.Addr().String() + "/allocate", nil
}
