package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/opendps/dps/device"
	"github.com/spf13/cobra"
)

// deviceFlags say how a device connects to its hub.
type deviceFlags struct {
	hub, deviceID, key, groupKey, cert, certKey, endpoint, transport string
	timeout                                                          time.Duration
	tls                                                              tlsFlags
}

func newDevice() *cobra.Command {
	var df deviceFlags
	cmd := &cobra.Command{
		Use:   "device",
		Short: "Act as a device on its IoT hub over MQTT: read the twin, report properties, send telemetry, listen",
		Long: `Act as a provisioned device on its IoT hub (dps's built-in hub, or Azure IoT Hub) over
MQTT on 8883 or MQTT over WebSocket on 443: --hub is the registration's assignedHub,
--device-id its deviceId, and the credential the one the device registered with
(--key, --group-key to derive the device key from its group's key, or --cert/--cert-key).`,
	}
	p := cmd.PersistentFlags()
	p.StringVar(&df.hub, "hub", "localhost", "host name of the device's hub (the registration's assignedHub)")
	p.StringVar(&df.deviceID, "device-id", "", "the device's ID on the hub (the registration's deviceId)")
	p.StringVar(&df.key, "key", "", "device symmetric key (base64)")
	p.StringVar(&df.groupKey, "group-key", "", "enrollment group key (base64); the device key is derived from it with --device-id")
	p.StringVar(&df.cert, "cert", "", "X.509 device certificate file (PEM: the device certificate, then any intermediates)")
	p.StringVar(&df.certKey, "cert-key", "", "private key file (PEM) of --cert (default: --cert's file)")
	p.StringVar(&df.endpoint, "endpoint", "", "host:port to connect to (default: --hub, port 8883, or 443 with --transport mqttws)")
	p.StringVar(&df.transport, "transport", "mqtt", "mqtt, or mqttws (MQTT over WebSocket on the HTTPS port)")
	p.DurationVar(&df.timeout, "timeout", 30*time.Second, "give up connecting or waiting for the hub after this long")
	tf := &df.tls
	p.StringVar(&tf.caFile, "ca-file", os.Getenv("DPS_CA_FILE"), "PEM file of an extra CA to trust (dpsd prints its generated CA path) [$DPS_CA_FILE]")
	p.BoolVar(&tf.insecure, "insecure", false, "do not verify the server certificate (tests only)")
	cmd.AddCommand(newDeviceTwin(&df), newDeviceReport(&df), newDeviceSend(&df), newDeviceListen(&df))
	return cmd
}

// connect connects the device to its hub.
func (df *deviceFlags) connect(ctx context.Context) (*device.Hub, error) {
	if df.deviceID == "" {
		return nil, errors.New("--device-id is required")
	}
	var cred device.Credential
	switch n := countSet(df.key, df.groupKey, df.cert); {
	case n != 1:
		return nil, errors.New("give exactly one of --key (the device key), --group-key (derive the device key) or --cert (an X.509 device)")
	case df.key != "":
		cred = device.SymmetricKey(df.key)
	case df.groupKey != "":
		k, err := device.DeriveKey(df.groupKey, df.deviceID)
		if err != nil {
			return nil, err
		}
		cred = device.SymmetricKey(k)
	default:
		keyFile := df.certKey
		if keyFile == "" {
			keyFile = df.cert
		}
		c, err := tls.LoadX509KeyPair(df.cert, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert/--cert-key: %w", err)
		}
		cred = device.Certificate(c)
	}
	o := device.HubOptions{Host: df.hub, DeviceID: df.deviceID, Credential: cred, Address: df.endpoint}
	switch df.transport {
	case "mqtt":
	case "mqttws":
		o.WebSocket = true
	default:
		return nil, fmt.Errorf("--transport %q: want mqtt or mqttws", df.transport)
	}
	if o.Address != "" {
		if _, _, err := net.SplitHostPort(o.Address); err != nil {
			return nil, fmt.Errorf("--endpoint %q: want host:port", o.Address)
		}
	}
	hc, err := df.tls.client(0)
	if err != nil {
		return nil, err
	}
	o.TLS = hc.Transport.(*http.Transport).TLSClientConfig
	cctx, cancel := context.WithTimeout(ctx, df.timeout)
	defer cancel()
	return device.ConnectHub(cctx, o)
}

func countSet(s ...string) int {
	n := 0
	for _, v := range s {
		if v != "" {
			n++
		}
	}
	return n
}

// withHub connects, runs fn with a context bounded by --timeout, and
// disconnects.
func (df *deviceFlags) withHub(cmd *cobra.Command, fn func(ctx context.Context, h *device.Hub) error) error {
	h, err := df.connect(cmd.Context())
	if err != nil {
		return err
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), df.timeout)
	defer cancel()
	return fn(ctx, h)
}

func newDeviceTwin(df *deviceFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "twin",
		Short:   "Print the device's twin (desired and reported properties) as JSON",
		Example: `  dpsctl device twin --device-id sensor-0001 --group-key "$GROUP_KEY" --ca-file dps-data/tls/ca.pem`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return df.withHub(cmd, func(ctx context.Context, h *device.Hub) error {
				t, err := h.Twin(ctx)
				if err != nil {
					return err
				}
				return printDeviceJSON(cmd.OutOrStdout(), t)
			})
		},
	}
}

func newDeviceReport(df *deviceFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "report PATCH_JSON",
		Short:   "Patch the device's reported properties and print their new version",
		Example: `  dpsctl device report '{"firmware":"2.0.0"}' --device-id sensor-0001 --key "$DEVICE_KEY"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !json.Valid([]byte(args[0])) {
				return errors.New("the patch is not valid JSON")
			}
			return df.withHub(cmd, func(ctx context.Context, h *device.Hub) error {
				v, err := h.UpdateReported(ctx, json.RawMessage(args[0]))
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "reported properties at version %d\n", v)
				return nil
			})
		},
	}
}

func newDeviceSend(df *deviceFlags) *cobra.Command {
	var (
		props                  []string
		messageID, contentType string
	)
	cmd := &cobra.Command{
		Use:   "send BODY",
		Short: "Send one device-to-cloud message (telemetry) and wait for the hub's acknowledgement",
		Example: `  dpsctl device send '{"temperature":21.5}' --prop alert=high --device-id sensor-0001 --key "$DEVICE_KEY"
  dpsctl hub events   # shows it on dps's built-in hub`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bag := map[string]string{}
			for _, p := range props {
				k, v, ok := strings.Cut(p, "=")
				if !ok || k == "" {
					return fmt.Errorf("--prop %q: want name=value", p)
				}
				bag[k] = v
			}
			ct := contentType
			if !cmd.Flags().Changed("content-type") && json.Valid([]byte(args[0])) {
				ct = "application/json"
			}
			if ct != "" {
				bag["$.ct"], bag["$.ce"] = ct, "utf-8"
			}
			if messageID != "" {
				bag["$.mid"] = messageID
			}
			return df.withHub(cmd, func(ctx context.Context, h *device.Hub) error {
				if err := h.Send(ctx, []byte(args[0]), bag); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "message sent: the hub acknowledged it")
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&props, "prop", nil, "application property name=value (repeat)")
	f.StringVar(&messageID, "message-id", "", "message ID")
	f.StringVar(&contentType, "content-type", "", "content type (default: application/json when BODY is JSON)")
	return cmd
}

// listenRetry is how long listen waits before it connects again.
const listenRetry = 5 * time.Second

func newDeviceListen(df *deviceFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "listen",
		Short: "Print desired-property patches, direct-method calls (answered 200 {}) and cloud-to-device messages until interrupted",
		Long: `Connect as the device and print, one line each, until interrupted:

  desired <version> <patch>
  method <name> <payload>             (answered with status 200 and {})
  message <message id> {<properties>} <body>

When the hub ends the connection (another connection of the device took over, its
token expired), listen connects again.`,
		Example: `  dpsctl device listen --device-id sensor-0001 --key "$DEVICE_KEY" --ca-file dps-data/tls/ca.pem`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			out := &syncWriter{w: cmd.OutOrStdout()}
			for {
				err := df.listenOnce(ctx, out)
				if ctx.Err() != nil {
					return nil // interrupted
				}
				var refused *device.ConnectRefusedError
				if errors.As(err, &refused) && refused.Code != 3 {
					return err // not authorized: trying again will not help
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "dpsctl: %v; connecting again in %s\n", err, listenRetry)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(listenRetry):
				}
			}
		},
	}
}

// listenOnce connects, subscribes and prints until the connection or ctx
// ends.
func (df *deviceFlags) listenOnce(ctx context.Context, out io.Writer) error {
	h, err := df.connect(ctx)
	if err != nil {
		return err
	}
	defer h.Close()
	sctx, cancel := context.WithTimeout(ctx, df.timeout)
	defer cancel()
	if err := h.OnDesired(sctx, func(version int64, patch json.RawMessage) {
		fmt.Fprintf(out, "desired %d %s\n", version, patch)
	}); err != nil {
		return err
	}
	if err := h.OnMethod(sctx, func(name string, payload json.RawMessage) (int, any) {
		fmt.Fprintf(out, "method %s %s\n", name, payload)
		return 200, json.RawMessage("{}")
	}); err != nil {
		return err
	}
	if err := h.OnMessage(sctx, func(m device.CloudMessage) {
		id := m.MessageID
		if id == "" {
			id = "-"
		}
		keys := make([]string, 0, len(m.Properties))
		for k := range m.Properties {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			keys[i] = k + "=" + m.Properties[k]
		}
		fmt.Fprintf(out, "message %s {%s} %s\n", id, strings.Join(keys, ","), messageText(m.Body))
	}); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-h.Done():
		if err := h.Err(); err != nil {
			return fmt.Errorf("the hub ended the connection: %w", err)
		}
		return errors.New("the hub ended the connection")
	}
}

// syncWriter serialises writes.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func printDeviceJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// messageText is a message body on one line: as text when it is UTF-8
// (quoted when it holds control characters), else base64:….
func messageText(b []byte) string {
	if !utf8.Valid(b) {
		return "base64:" + base64.StdEncoding.EncodeToString(b)
	}
	if s := string(b); strings.ContainsFunc(s, unicode.IsControl) {
		return strconv.Quote(s)
	}
	return string(b)
}
