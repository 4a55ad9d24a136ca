package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/wire"
	"github.com/spf13/cobra"
)

// newEvents prints the registration-events feed (the service API's
// /registrationEvents extension; a policy with ServiceConfig).
func newEvents() *cobra.Command {
	var (
		sf                        svcFlags
		follow                    bool
		regID, kind, group, since string
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print the registration events: accepted, refused, assigned, failed, webhook calls",
		Long: `Print the registration-events feed, oldest first, one line per event: time, kind,
registration ID, transport, source address, then what happened (the error code, cause and
reason of a refusal or a failure, the hub and device ID of an assignment, the status and
latency of a webhook call) and the payload. With -o json, one JSON object per line (the
shape of GET /registrationEvents). Without --follow it prints the events kept and exits;
with --follow it then prints new events as they happen, on any node, until interrupted.

The connection string is a service policy with ServiceConfig (dpsd prints the generated
owner policy at start).`,
		Example: `  dpsctl events --follow --ca-file dps-data/tls/ca.pem
  dpsctl events --registration-id dev-1 --since 1h
  dpsctl events --kind refused -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := client.EventQuery{RegistrationID: regID, Group: group}
			if kind != "" {
				if !slices.Contains(eventKinds(), strings.ToLower(kind)) {
					return fmt.Errorf("--kind %q: want one of %s", kind, strings.Join(eventKinds(), ", "))
				}
				q.Kind = strings.ToLower(kind)
			}
			if since != "" {
				d, err := time.ParseDuration(since)
				if err != nil || d < 0 {
					return fmt.Errorf("--since %q: want a duration (10m, 2h)", since)
				}
				q.Since = time.Now().Add(-d).UTC().Format(time.RFC3339Nano)
			}
			o := strings.ToLower(sf.output)
			if o != "table" && o != "text" && o != "json" {
				return fmt.Errorf("--output %q: want text or json", sf.output)
			}
			c, err := sf.client()
			if err != nil {
				return err
			}
			return printRegistrationEvents(cmd.Context(), c, q, follow, o == "json", cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	sf.add(cmd)
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	f.StringVar(&regID, "registration-id", "", "only this device's events")
	f.StringVar(&kind, "kind", "", "only events of this kind: accepted, refused, assigned, failed or webhook")
	f.StringVar(&group, "group", "", "only events of this enrollment group")
	f.StringVar(&since, "since", "", "only events of this last duration (10m, 2h)")
	return cmd
}

// printRegistrationEvents prints the events q selects; with follow, it
// then streams new ones, reconnecting (after the last event printed) when
// dpsd restarts or the connection drops.
func printRegistrationEvents(ctx context.Context, c *client.Client, q client.EventQuery, follow, asJSON bool, stdout, stderr io.Writer) error {
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	emit := func(e wire.RegistrationEvent) error {
		q.After = e.Seq
		if asJSON {
			return enc.Encode(e)
		}
		_, err := fmt.Fprintln(stdout, registrationEventLine(e))
		return err
	}
	if !follow {
		q.Limit = 1000
		for {
			page, err := c.RegistrationEvents(ctx, q)
			if err != nil {
				return err
			}
			if len(page) == 0 {
				return nil
			}
			for _, e := range page {
				if err := emit(e); err != nil {
					return err
				}
			}
		}
	}
	for {
		err := c.FollowRegistrationEvents(ctx, q, emit)
		switch {
		case ctx.Err() != nil:
			return nil // interrupted
		case errors.Is(err, client.ErrStreamEnded):
			fmt.Fprintln(stderr, "dpsctl: the event stream ended (dpsd shutting down?); reconnecting")
		case client.StatusOf(err) != 0:
			return err // refused: a bad query or credential
		default:
			fmt.Fprintf(stderr, "dpsctl: %v; reconnecting\n", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}

// eventKinds are the kinds of registration event (dps.EventKind).
func eventKinds() []string { return []string{"accepted", "refused", "assigned", "failed", "webhook"} }

// registrationEventLine is an event in one line.
func registrationEventLine(e wire.RegistrationEvent) string {
	t := e.Time
	if pt, err := time.Parse(wire.RegistrationEventTimeFormat, e.Time); err == nil {
		t = pt.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	fields := []string{t, fmt.Sprintf("%-8s", e.Kind), dash(e.RegistrationID), dash(e.Transport), dash(e.Source)}
	switch e.Kind {
	case "refused", "failed":
		what := strconv.Itoa(e.ErrorCode)
		if e.ErrorCode == 0 {
			what = "-"
		}
		if e.Cause != "" {
			what += " " + e.Cause
		}
		fields = append(fields, what+": "+strconv.Quote(e.Reason))
	case "assigned":
		fields = append(fields, "hub="+e.AssignedHub, "device="+e.DeviceID)
	case "webhook":
		if w := e.Webhook; w != nil {
			status := "-"
			if w.Status != 0 {
				status = strconv.Itoa(w.Status)
			}
			fields = append(fields, w.URL, status, strconv.FormatFloat(w.LatencyMs, 'f', 1, 64)+"ms")
			if w.Error != "" {
				fields = append(fields, strconv.Quote(w.Error))
			}
		}
	}
	if e.EnrollmentGroup != "" {
		fields = append(fields, "group="+e.EnrollmentGroup)
	}
	switch {
	case e.PayloadTruncated:
		fields = append(fields, "payload=(over the size cap)")
	case len(e.Payload) > 0:
		p := string(e.Payload)
		if len(p) > 200 {
			p = p[:200] + "…"
		}
		fields = append(fields, "payload="+p)
	}
	return strings.Join(fields, " ")
}
