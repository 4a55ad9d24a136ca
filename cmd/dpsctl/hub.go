package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
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
	hub.AddCommand(newHubEvents(), newHubDevice(), newHubTwin(), newHubMethod(), newHubC2D(), newHubQuery())
	hub.AddCommand(newHubRoutes()) // hubroutes.go
	hub.AddCommand(newHubConnectionString())
	return hub
}

// followWait is how long one read of --follow waits for a message.
const followWait = 30 * time.Second

func newHubEvents() *cobra.Command {
	var (
		connectionString, hubName, endpoint, from, output, consumer string
		follow                                                      bool
		tf                                                          tlsFlags
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print the device-to-cloud messages of a built-in hub's event log, one line each",
		Long: `Print the device-to-cloud messages of a built-in hub's event log, in order, one line
each: sequence number, enqueued time, device, message id, application properties and
body (as text when it is UTF-8, else base64:…). With -o json, one JSON object per line
(the shape of GET /messages/events). Without --follow it prints what the log holds
from --from on and exits; with --follow it then waits for new messages until interrupted.
With --consumer NAME it resumes after that consumer's checkpoint (unless --from says
otherwise) and stores the checkpoint after each page it printed, so that the next run
with the same name goes on where this one stopped.

The connection string is one of the hub's access policies with ServiceConnect
(dpsd prints the generated iothubowner one at start as "Hub connection").`,
		Example: `  dpsctl hub events --follow --hub-connection-string "$DPS_HUB_CONNECTION_STRING" --ca-file dps-data/tls/ca.pem
  dpsctl hub events --from 1200 -o json
  dpsctl hub events --consumer archiver -o json >> archive.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if from != "" && from != "end" {
				if n, err := strconv.ParseInt(from, 10, 64); err != nil || n < 0 {
					return fmt.Errorf("--from %q: want a sequence number or end", from)
				}
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("--output %q: want text or json", output)
			}
			c, err := hubClient(connectionString, hubName, endpoint, tf)
			if err != nil {
				return err
			}
			return printEvents(cmd.Context(), c, from, consumer, follow, output == "json", cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&connectionString, "hub-connection-string", "", "the hub's connection string HostName=…;SharedAccessKeyName=…;SharedAccessKey=… [$DPS_HUB_CONNECTION_STRING]")
	f.StringVar(&hubName, "hub", "", "the built-in hub's host name (default: the connection string's HostName)")
	f.StringVar(&endpoint, "endpoint", "", "URL of dpsd's HTTPS port when it differs from https://<hub> (for example https://127.0.0.1:8443)")
	f.StringVar(&from, "from", "", "sequence number of the first message to print, or end for only new ones (default: the oldest kept)")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new messages until interrupted")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	f.StringVar(&consumer, "consumer", "", "a consumer name: resume after its checkpoint and checkpoint each printed page")
	tf.add(cmd)
	return cmd
}

// hubClient is a client of a built-in hub's service API from a hub
// connection string ($DPS_HUB_CONNECTION_STRING when ""), the hub's name
// and dpsd's endpoint when they differ from the connection string's.
func hubClient(connectionString, hubName, endpoint string, tf tlsFlags) (*client.Client, error) {
	if connectionString == "" {
		connectionString = os.Getenv("DPS_HUB_CONNECTION_STRING")
	}
	if connectionString == "" {
		return nil, errors.New("a hub connection string is required: --hub-connection-string or $DPS_HUB_CONNECTION_STRING (dpsd prints it at start as \"Hub connection\")")
	}
	c, err := client.FromConnectionString(connectionString)
	if err != nil {
		return nil, err
	}
	if hubName != "" {
		c.HostName, c.Endpoint = hubName, "https://"+hubName
	}
	if endpoint != "" {
		c.Endpoint = endpoint
	}
	if c.HTTP, err = tf.client(0); err != nil {
		return nil, err
	}
	return c, nil
}

// printEvents reads the log from from (or after consumer's checkpoint)
// and prints each message; with a consumer, it checkpoints each page it
// printed.
func printEvents(ctx context.Context, c *client.Client, from, consumer string, follow, asJSON bool, stdout, stderr io.Writer) error {
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for {
		var wait time.Duration
		if follow {
			wait = followWait
		}
		rctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
		p, err := c.HubConsumerEvents(rctx, consumer, from, 0, wait)
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
		if consumer != "" && len(p.Messages) > 0 {
			if err := c.HubCheckpoint(ctx, consumer, p.Next-1); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("checkpoint %s at %d: %w", consumer, p.Next-1, err)
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

// hubFlags are the flags every hub service command shares.
type hubFlags struct {
	connectionString, hubName, endpoint, output string
	tf                                          tlsFlags
}

func (h *hubFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&h.connectionString, "hub-connection-string", "", "the hub's connection string HostName=…;SharedAccessKeyName=…;SharedAccessKey=… [$DPS_HUB_CONNECTION_STRING]")
	f.StringVar(&h.hubName, "hub", "", "the built-in hub's host name (default: the connection string's HostName)")
	f.StringVar(&h.endpoint, "endpoint", "", "URL of dpsd's HTTPS port when it differs from https://<hub> (for example https://127.0.0.1:8443)")
	f.StringVarP(&h.output, "output", "o", "text", "output format: text or json")
	h.tf.add(cmd)
}

// call sends one request to the hub and returns the answer's body.
func (h *hubFlags) call(ctx context.Context, method, path string, hdr map[string]string, body []byte) ([]byte, error) {
	if h.output != "text" && h.output != "json" {
		return nil, fmt.Errorf("--output %q: want text or json", h.output)
	}
	c, err := hubClient(h.connectionString, h.hubName, h.endpoint, h.tf)
	if err != nil {
		return nil, err
	}
	out, _, err := c.HubCall(ctx, method, path, hdr, body)
	return out, err
}

// printHubJSON writes a JSON answer indented.
func printHubJSON(w io.Writer, data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		_, err = w.Write(data)
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func devicePath(id string) string { return "/devices/" + url.PathEscape(id) }

// hubDeviceView is what dpsctl reads of a device identity.
type hubDeviceView struct {
	DeviceID        string `json:"deviceId"`
	GenerationID    string `json:"generationId"`
	ETag            string `json:"etag"`
	ConnectionState string `json:"connectionState"`
	Status          string `json:"status"`
	StatusReason    string `json:"statusReason"`
	C2D             int    `json:"cloudToDeviceMessageCount"`
	Authentication  struct {
		SymmetricKey struct {
			PrimaryKey   string `json:"primaryKey"`
			SecondaryKey string `json:"secondaryKey"`
		} `json:"symmetricKey"`
		Type string `json:"type"`
	} `json:"authentication"`
}

// redactKeys replaces a device's symmetric keys in its JSON (an object
// or an array of them) unless show.
func redactKeys(data []byte, show bool) []byte {
	if show {
		return data
	}
	var v any
	if json.Unmarshal(data, &v) != nil {
		return data
	}
	redact := func(d any) {
		m, _ := d.(map[string]any)
		a, _ := m["authentication"].(map[string]any)
		if k, ok := a["symmetricKey"].(map[string]any); ok {
			for _, name := range []string{"primaryKey", "secondaryKey"} {
				if s, _ := k[name].(string); s != "" {
					k[name] = "REDACTED"
				}
			}
		}
	}
	if list, ok := v.([]any); ok {
		for _, d := range list {
			redact(d)
		}
	} else {
		redact(v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return data
	}
	return b
}

func deviceLine(d hubDeviceView) string {
	reason := ""
	if d.StatusReason != "" {
		reason = " (" + d.StatusReason + ")"
	}
	return fmt.Sprintf("%s\t%s%s\t%s\tauth=%s\tc2d=%d\tetag=%s", d.DeviceID, d.Status, reason, d.ConnectionState, d.Authentication.Type, d.C2D, d.ETag)
}

// printDevice prints a device answer: JSON (keys redacted unless
// showKeys), or a line, with the keys when showKeys.
func printDevice(w io.Writer, data []byte, asJSON, showKeys bool) error {
	if asJSON {
		return printHubJSON(w, redactKeys(data, showKeys))
	}
	var d hubDeviceView
	if err := json.Unmarshal(data, &d); err != nil {
		return err
	}
	fmt.Fprintln(w, deviceLine(d))
	if showKeys && d.Authentication.Type == "sas" {
		fmt.Fprintf(w, "primaryKey: %s\nsecondaryKey: %s\n", d.Authentication.SymmetricKey.PrimaryKey, d.Authentication.SymmetricKey.SecondaryKey)
	}
	return nil
}

func newHubDevice() *cobra.Command {
	cmd := &cobra.Command{Use: "device", Short: "Manage the device identities of a built-in hub (the IoT Hub registry)"}
	var (
		h                     hubFlags
		showKeys, disable, en bool
		edge                  bool
		reason, primary, etag string
		secondary             string
		top                   int
	)
	create := &cobra.Command{
		Use:     "create <device-id>",
		Short:   "Create a device identity (symmetric keys are generated unless given)",
		Example: `  dpsctl hub device create sensor-1 --show-keys`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{"deviceId": args[0], "status": map[bool]string{false: "enabled", true: "disabled"}[disable],
				"authentication": map[string]any{"type": "sas", "symmetricKey": map[string]string{"primaryKey": primary, "secondaryKey": secondary}},
				"capabilities":   map[string]bool{"iotEdge": edge}}
			if reason != "" {
				body["statusReason"] = reason
			}
			b, _ := json.Marshal(body)
			out, err := h.call(cmd.Context(), "PUT", devicePath(args[0]), nil, b)
			if err != nil {
				return err
			}
			return printDevice(cmd.OutOrStdout(), out, h.output == "json", showKeys)
		},
	}
	create.Flags().StringVar(&primary, "primary-key", "", "the primary symmetric key, base64 of 16–64 bytes (default: generated)")
	create.Flags().StringVar(&secondary, "secondary-key", "", "the secondary symmetric key (default: generated)")
	create.Flags().BoolVar(&edge, "edge", false, "an IoT Edge device")
	show := &cobra.Command{
		Use:   "show <device-id>",
		Short: "Show a device identity",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := h.call(cmd.Context(), "GET", devicePath(args[0]), nil, nil)
			if err != nil {
				return err
			}
			return printDevice(cmd.OutOrStdout(), out, h.output == "json", showKeys)
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List device identities (at most --top, 1–1000)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := h.call(cmd.Context(), "GET", "/devices?top="+strconv.Itoa(top), nil, nil)
			if err != nil {
				return err
			}
			if h.output == "json" {
				return printHubJSON(cmd.OutOrStdout(), redactKeys(out, showKeys))
			}
			var ds []hubDeviceView
			if err := json.Unmarshal(out, &ds); err != nil {
				return err
			}
			for _, d := range ds {
				fmt.Fprintln(cmd.OutOrStdout(), deviceLine(d))
			}
			return nil
		},
	}
	list.Flags().IntVar(&top, "top", 1000, "the most devices to list")
	update := &cobra.Command{
		Use:   "update <device-id>",
		Short: "Change a device identity's status or status reason (read, changed, written back with its etag)",
		Example: `  dpsctl hub device update sensor-1 --disable --status-reason stolen
  dpsctl hub device update sensor-1 --enable`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if disable && en {
				return errors.New("--disable and --enable exclude each other")
			}
			cur, err := h.call(cmd.Context(), "GET", devicePath(args[0]), nil, nil)
			if err != nil {
				return err
			}
			var d map[string]any
			if err := json.Unmarshal(cur, &d); err != nil {
				return err
			}
			switch {
			case disable:
				d["status"] = "disabled"
			case en:
				d["status"] = "enabled"
			}
			if cmd.Flags().Changed("status-reason") {
				d["statusReason"] = reason
			}
			b, _ := json.Marshal(d)
			out, err := h.call(cmd.Context(), "PUT", devicePath(args[0]), map[string]string{"If-Match": `"` + fmt.Sprint(d["etag"]) + `"`}, b)
			if err != nil {
				return err
			}
			return printDevice(cmd.OutOrStdout(), out, h.output == "json", showKeys)
		},
	}
	update.Flags().BoolVar(&en, "enable", false, "enable the device")
	del := &cobra.Command{
		Use:   "delete <device-id>",
		Short: "Delete a device identity (its connection is closed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ifMatch := "*"
			if etag != "" {
				ifMatch = `"` + strings.Trim(etag, `"`) + `"`
			}
			_, err := h.call(cmd.Context(), "DELETE", devicePath(args[0]), map[string]string{"If-Match": ifMatch}, nil)
			if err == nil && h.output == "text" {
				fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", args[0])
			}
			return err
		},
	}
	del.Flags().StringVar(&etag, "etag", "", "delete only if the device's etag is this")
	for _, c := range []*cobra.Command{create, update} {
		c.Flags().BoolVar(&disable, "disable", false, "disable the device (it cannot connect)")
		c.Flags().StringVar(&reason, "status-reason", "", "the status reason (at most 128 characters)")
	}
	for _, c := range []*cobra.Command{create, show, list, update} {
		c.Flags().BoolVar(&showKeys, "show-keys", false, "print the symmetric keys (otherwise REDACTED)")
	}
	for _, c := range []*cobra.Command{create, show, list, update, del} {
		h.add(c)
		cmd.AddCommand(c)
	}
	return cmd
}

// setPatch builds a twin patch {"tags":{…},"properties":{"desired":{…}}}
// from path=value assignments (tags.a.b=…, desired.x=… or
// properties.desired.x=…); a value that is JSON is taken as JSON, else as
// a string.
func setPatch(patch map[string]any, sets []string) error {
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("--set %q: want path=value", s)
		}
		path := strings.Split(strings.TrimPrefix(k, "properties."), ".")
		var root map[string]any
		switch path[0] {
		case "tags":
			root = patch
		case "desired":
			props, _ := patch["properties"].(map[string]any)
			if props == nil {
				props = map[string]any{}
				patch["properties"] = props
			}
			root = props
		default:
			return fmt.Errorf("--set %q: the path must start with tags. or desired.", s)
		}
		if len(path) < 2 || slices.Contains(path, "") {
			return fmt.Errorf("--set %q: the path names no property", s)
		}
		var val any
		if json.Unmarshal([]byte(v), &val) != nil {
			val = v
		}
		m := root
		for _, p := range path[:len(path)-1] {
			next, _ := m[p].(map[string]any)
			if next == nil {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[path[len(path)-1]] = val
	}
	return nil
}

func newHubTwin() *cobra.Command {
	cmd := &cobra.Command{Use: "twin", Short: "Show and update device twins of a built-in hub"}
	var (
		h           hubFlags
		sets        []string
		desiredFile string
		etag        string
	)
	show := &cobra.Command{
		Use:   "show <device-id>",
		Short: "Show a device's twin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := h.call(cmd.Context(), "GET", "/twins/"+url.PathEscape(args[0]), nil, nil)
			if err != nil {
				return err
			}
			return printHubJSON(cmd.OutOrStdout(), out)
		},
	}
	update := &cobra.Command{
		Use:   "update <device-id>",
		Short: "Merge tags and desired properties into a device's twin (null deletes)",
		Example: `  dpsctl hub twin update sensor-1 --set tags.site=berlin --set desired.interval=30
  dpsctl hub twin update sensor-1 --desired-file desired.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			patch := map[string]any{}
			if desiredFile != "" {
				b, err := os.ReadFile(desiredFile)
				if err != nil {
					return err
				}
				var desired map[string]any
				if err := json.Unmarshal(b, &desired); err != nil {
					return fmt.Errorf("--desired-file %s: want a JSON object: %v", desiredFile, err)
				}
				patch["properties"] = map[string]any{"desired": desired}
			}
			if err := setPatch(patch, sets); err != nil {
				return err
			}
			if len(patch) == 0 {
				return errors.New("nothing to update: give --set or --desired-file")
			}
			ifMatch := "*"
			if etag != "" {
				ifMatch = `"` + strings.Trim(etag, `"`) + `"`
			}
			b, _ := json.Marshal(patch)
			out, err := h.call(cmd.Context(), "PATCH", "/twins/"+url.PathEscape(args[0]), map[string]string{"If-Match": ifMatch}, b)
			if err != nil {
				return err
			}
			return printHubJSON(cmd.OutOrStdout(), out)
		},
	}
	update.Flags().StringArrayVar(&sets, "set", nil, "path=value, the path under tags. or desired. (repeatable)")
	update.Flags().StringVar(&desiredFile, "desired-file", "", "a JSON file of desired properties to merge")
	update.Flags().StringVar(&etag, "etag", "", "update only if the twin's etag is this")
	for _, c := range []*cobra.Command{show, update} {
		h.add(c)
		cmd.AddCommand(c)
	}
	return cmd
}

func newHubMethod() *cobra.Command {
	cmd := &cobra.Command{Use: "method", Short: "Call direct methods of devices connected to a built-in hub"}
	var (
		h       hubFlags
		timeout int
	)
	invoke := &cobra.Command{
		Use:     "invoke <device-id> <method> [payload]",
		Short:   "Call a direct method and print the device's answer {status, payload}",
		Example: `  dpsctl hub method invoke sensor-1 reboot '{"delay":5}'`,
		Args:    cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			var payload json.RawMessage = []byte("null")
			if len(args) == 3 {
				payload = json.RawMessage(args[2])
				if !json.Valid(payload) {
					payload, _ = json.Marshal(args[2]) // not JSON: a string
				}
			}
			b, _ := json.Marshal(map[string]any{"methodName": args[1], "payload": payload, "responseTimeoutInSeconds": timeout, "connectTimeoutInSeconds": 0})
			rctx, cancel := context.WithTimeout(cmd.Context(), time.Duration(timeout+30)*time.Second)
			defer cancel()
			out, err := h.call(rctx, "POST", "/twins/"+url.PathEscape(args[0])+"/methods", nil, b)
			if err != nil {
				return err
			}
			return printHubJSON(cmd.OutOrStdout(), out)
		},
	}
	invoke.Flags().IntVar(&timeout, "timeout", 30, "seconds to wait for the device's answer (5–300)")
	h.add(invoke)
	cmd.AddCommand(invoke)
	return cmd
}

func newHubC2D() *cobra.Command {
	cmd := &cobra.Command{Use: "c2d", Short: "Send cloud-to-device messages through a built-in hub (a dps extension of the REST API)"}
	var (
		h       hubFlags
		props   []string
		id, ack string
	)
	send := &cobra.Command{
		Use:     "send <device-id> <body>",
		Short:   "Queue a cloud-to-device message for a device",
		Example: `  dpsctl hub c2d send sensor-1 '{"command":"reboot"}' --prop priority=high`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			hdr := map[string]string{}
			if id != "" {
				hdr["iothub-messageid"] = id
			}
			if ack != "" {
				hdr["iothub-ack"] = ack
			}
			for _, p := range props {
				k, v, ok := strings.Cut(p, "=")
				if !ok || k == "" {
					return fmt.Errorf("--prop %q: want name=value", p)
				}
				hdr["iothub-app-"+k] = v
			}
			_, err := h.call(cmd.Context(), "POST", devicePath(args[0])+"/messages/deviceBound", hdr, []byte(args[1]))
			if err == nil && h.output == "text" {
				fmt.Fprintf(cmd.OutOrStdout(), "queued for %s\n", args[0])
			}
			return err
		},
	}
	send.Flags().StringArrayVar(&props, "prop", nil, "an application property name=value (repeatable)")
	send.Flags().StringVar(&id, "message-id", "", "the message id")
	send.Flags().StringVar(&ack, "ack", "", "the feedback to ask for (iothub-ack): none, positive, negative or full")
	h.add(send)
	cmd.AddCommand(send, newHubC2DFeedback())
	return cmd
}

// feedbackPoll is how often c2d feedback --follow asks for new records.
const feedbackPoll = 2 * time.Second

func newHubC2DFeedback() *cobra.Command {
	var (
		h      hubFlags
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "feedback",
		Short: "Print (and take) the delivery feedback of the hub's cloud-to-device messages",
		Long: `Print the feedback records of the hub's cloud-to-device messages — the outcomes their
iothub-ack asked for (Success, Expired, DeliveryCountExceeded, Rejected, Purged) — one line
each (with -o json, one JSON object per line), and complete each batch once printed: a
record is printed once. Without --follow it prints what is waiting and exits; with
--follow it keeps asking every 2 s until interrupted.`,
		Example: `  dpsctl hub c2d send sensor-1 reboot --message-id m-1 --ack full
  dpsctl hub c2d feedback --follow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if h.output != "text" && h.output != "json" {
				return fmt.Errorf("--output %q: want text or json", h.output)
			}
			c, err := hubClient(h.connectionString, h.hubName, h.endpoint, h.tf)
			if err != nil {
				return err
			}
			return printFeedback(cmd.Context(), c, follow, h.output == "json", cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new feedback until interrupted")
	h.add(cmd)
	return cmd
}

// printFeedback takes the hub's feedback batch after batch, prints each
// record and completes the batch.
func printFeedback(ctx context.Context, c *client.Client, follow, asJSON bool, stdout io.Writer) error {
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for {
		data, hdr, err := c.HubCall(ctx, "GET", "/messages/serviceBound/feedback", nil, nil)
		if err != nil {
			if follow && ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(data) > 0 {
			var batch []wire.HubFeedback
			if err := json.Unmarshal(data, &batch); err != nil {
				return fmt.Errorf("feedback batch: %w", err)
			}
			for _, f := range batch {
				if asJSON {
					if err := enc.Encode(f); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(stdout, "%s  %s  %s  %s (generation %s)  %s\n", f.EnqueuedTimeUtc, f.StatusCode, f.OriginalMessageID, f.DeviceID, f.DeviceGenerationID, f.Description)
			}
			lock := strings.Trim(hdr.Get("ETag"), `"`)
			if _, _, err := c.HubCall(ctx, "DELETE", "/messages/serviceBound/feedback/"+url.PathEscape(lock), nil, nil); err != nil {
				return fmt.Errorf("complete the feedback batch: %w", err)
			}
			continue // there may be more
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(feedbackPoll):
		}
	}
}

func newHubConnectionString() *cobra.Command {
	var hub, policy, key string
	cmd := &cobra.Command{
		Use:   "connection-string",
		Short: "Compose a built-in hub's service connection string from a policy name and key",
		Long: `Compose the service connection string HostName=<hub>;SharedAccessKeyName=<policy>;SharedAccessKey=<key>
of one of a built-in hub's access policies (those of linkedHubs[].accessPolicies in dpsd's
configuration). dpsctl cannot read it from a running dpsd: dpsd prints the connection
string of the iothubowner policy it generated at start ("Hub connection"), and a policy
you configured has the key you gave it. The key must be base64.`,
		Example: `  export DPS_HUB_CONNECTION_STRING=$(dpsctl hub connection-string --hub hub.example.net --policy iothubowner --key "$KEY")`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if hub == "" || policy == "" || key == "" {
				return errors.New("--hub, --policy and --key are required")
			}
			if _, err := base64.StdEncoding.DecodeString(key); err != nil {
				return fmt.Errorf("--key: not base64: %w", err)
			}
			if strings.ContainsAny(hub+policy, ";=") {
				return errors.New("--hub and --policy may not contain ; or =")
			}
			fmt.Fprintf(cmd.OutOrStdout(), "HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s\n", hub, policy, key)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&hub, "hub", "", "the built-in hub's host name")
	f.StringVar(&policy, "policy", "iothubowner", "the access policy's name")
	f.StringVar(&key, "key", "", "the policy's key (base64)")
	return cmd
}
