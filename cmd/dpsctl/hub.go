package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/wire"
	"github.com/spf13/cobra"
)

func newHub() *cobra.Command {
	hub := &cobra.Command{Use: "hub", Short: "Built-in IoT hub commands (with a hub access policy's connection string)"}
	hub.AddCommand(newHubEvents())
	return hub
}

// followWait is how long one read of --follow waits for a message.
const followWait = 30 * time.Second

func newHubEvents() *cobra.Command {
	var (
		connectionString, hubName, endpoint, from, output string
		follow                                            bool
		tf                                                tlsFlags
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print the device-to-cloud messages of a built-in hub's event log, one line each",
		Long: `Print the device-to-cloud messages of a built-in hub's event log, in order, one line
each: sequence number, enqueued time, device, message id, application properties and
body (as text when it is UTF-8, else base64:…). With -o json, one JSON object per line
(the shape of GET /messages/events). Without --follow it prints what the log holds
from --from on and exits; with --follow it then waits for new messages until interrupted.

The connection string is one of the hub's access policies with ServiceConnect
(dpsd prints the generated iothubowner one at start as "Hub connection").`,
		Example: `  dpsctl hub events --follow --hub-connection-string "$DPS_HUB_CONNECTION_STRING" --ca-file dps-data/tls/ca.pem
  dpsctl hub events --from 1200 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if connectionString == "" {
				connectionString = os.Getenv("DPS_HUB_CONNECTION_STRING")
			}
			if connectionString == "" {
				return errors.New("a hub connection string is required: --hub-connection-string or $DPS_HUB_CONNECTION_STRING (dpsd prints it at start as \"Hub connection\")")
			}
			if from != "" && from != "end" {
				if n, err := strconv.ParseInt(from, 10, 64); err != nil || n < 0 {
					return fmt.Errorf("--from %q: want a sequence number or end", from)
				}
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("--output %q: want text or json", output)
			}
			c, err := client.FromConnectionString(connectionString)
			if err != nil {
				return err
			}
			if hubName != "" {
				c.HostName, c.Endpoint = hubName, "https://"+hubName
			}
			if endpoint != "" {
				c.Endpoint = endpoint
			}
			if c.HTTP, err = tf.client(0); err != nil {
				return err
			}
			return printEvents(cmd.Context(), c, from, follow, output == "json", cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&connectionString, "hub-connection-string", "", "the hub's connection string HostName=…;SharedAccessKeyName=…;SharedAccessKey=… [$DPS_HUB_CONNECTION_STRING]")
	f.StringVar(&hubName, "hub", "", "the built-in hub's host name (default: the connection string's HostName)")
	f.StringVar(&endpoint, "endpoint", "", "URL of dpsd's HTTPS port when it differs from https://<hub> (for example https://127.0.0.1:8443)")
	f.StringVar(&from, "from", "", "sequence number of the first message to print, or end for only new ones (default: the oldest kept)")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new messages until interrupted")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	tf.add(cmd)
	return cmd
}

// printEvents reads the log from from and prints each message.
func printEvents(ctx context.Context, c *client.Client, from string, follow, asJSON bool, stdout, stderr io.Writer) error {
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for {
		var wait time.Duration
		if follow {
			wait = followWait
		}
		rctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
		p, err := c.HubEvents(rctx, from, 0, wait)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted
			}
			if follow && client.StatusOf(err) == 0 {
				// dpsd restarting or unreachable: try again.
				fmt.Fprintf(stderr, "dpsctl: %v; retrying\n", err)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(2 * time.Second):
				}
				continue
			}
			return err
		}
		if p.Skipped > 0 {
			start := p.Next - int64(len(p.Messages)) - p.Skipped
			fmt.Fprintf(stderr, "dpsctl: messages %d to %d are no longer kept (retention); reading from %d\n", start, start+p.Skipped-1, start+p.Skipped)
		}
		for _, m := range p.Messages {
			if asJSON {
				if err := enc.Encode(m); err != nil {
					return err
				}
			} else if _, err := fmt.Fprintln(stdout, eventLine(m)); err != nil {
				return err
			}
		}
		from = strconv.FormatInt(p.Next, 10)
		if !follow && len(p.Messages) == 0 {
			return nil
		}
	}
}

// eventLine is a message in one line: sequence number, time, device,
// message id, properties, body.
func eventLine(m wire.HubEvent) string {
	dev := m.DeviceID
	if m.ModuleID != nil {
		dev += "/" + *m.ModuleID
	}
	id := "-"
	if m.MessageID != nil {
		id = *m.MessageID
	}
	keys := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	props := make([]string, len(keys))
	for i, k := range keys {
		props[i] = k + "=" + m.Properties[k]
	}
	return fmt.Sprintf("#%d %s %s %s {%s} %s", m.SequenceNumber, m.EnqueuedTimeUtc, dev, id, strings.Join(props, ","), bodyText(m.Body))
}

// bodyText is a body as text when it is UTF-8 (quoted when it holds
// control characters, so that it stays on one line), else base64:….
func bodyText(b []byte) string {
	if !utf8.Valid(b) {
		return "base64:" + base64.StdEncoding.EncodeToString(b)
	}
	s := string(b)
	if strings.ContainsFunc(s, unicode.IsControl) {
		return strconv.Quote(s)
	}
	return s
}
