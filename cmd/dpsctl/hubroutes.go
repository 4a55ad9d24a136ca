package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/wire"
	"github.com/spf13/cobra"
)

func newHubRoutes() *cobra.Command {
	var (
		connectionString, hubName, endpoint, deadLetters, output string
		tf                                                       tlsFlags
	)
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "Show a built-in hub's message routes: status, checkpoint, lag, counts and last error",
		Long: `Show a built-in hub's message routes (GET /routes): per route its source, endpoint,
whether it is enabled, this node's state (delivering, retrying, standby, stopped, disabled),
the checkpoint in the event log, the lag (log positions after the checkpoint and the age of
the oldest), the messages delivered, failed and dead-lettered on the node that answered,
the node holding the route's lease and the last delivery error.

With --dead-letters NAME it prints the messages that route gave up on instead, one line
each: the message as dpsctl hub events prints it, when and why it was dead-lettered.
With -o json: the GET /routes answer, or one dead letter per line.

The connection string is one of the hub's access policies with ServiceConnect.`,
		Example: `  dpsctl hub routes --hub-connection-string "$DPS_HUB_CONNECTION_STRING" --ca-file dps-data/tls/ca.pem
  dpsctl hub routes --dead-letters lifecycle -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if connectionString == "" {
				connectionString = os.Getenv("DPS_HUB_CONNECTION_STRING")
			}
			if connectionString == "" {
				return errors.New("a hub connection string is required: --hub-connection-string or $DPS_HUB_CONNECTION_STRING (dpsd prints it at start as \"Hub connection\")")
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
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			if cmd.Flags().Changed("dead-letters") {
				if deadLetters == "" {
					return errors.New("--dead-letters: name a route")
				}
				return printDeadLetters(ctx, c, deadLetters, output == "json", cmd.OutOrStdout())
			}
			rs, err := c.HubRoutes(ctx)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetEscapeHTML(false)
				enc.SetIndent("", "  ")
				return enc.Encode(rs)
			}
			return printRoutes(cmd.OutOrStdout(), rs.Routes)
		},
	}
	f := cmd.Flags()
	f.StringVar(&connectionString, "hub-connection-string", "", "the hub's connection string HostName=…;SharedAccessKeyName=…;SharedAccessKey=… [$DPS_HUB_CONNECTION_STRING]")
	f.StringVar(&hubName, "hub", "", "the built-in hub's host name (default: the connection string's HostName)")
	f.StringVar(&endpoint, "endpoint", "", "URL of dpsd's HTTPS port when it differs from https://<hub> (for example https://127.0.0.1:8443)")
	f.StringVar(&deadLetters, "dead-letters", "", "print the dead letters of this route instead")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	tf.add(cmd)
	return cmd
}

// printRoutes writes the routes as a table.
func printRoutes(w io.Writer, routes []wire.HubRoute) error {
	if len(routes) == 0 {
		_, err := fmt.Fprintln(w, "no routes")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSOURCE\tENDPOINT\tSTATE\tCHECKPOINT\tLAG\tLAG AGE\tDELIVERED\tFAILED\tDEAD\tOWNER\tLAST ERROR")
	for _, r := range routes {
		state := r.State
		if r.State == "retrying" && r.RetryTime != nil {
			state += fmt.Sprintf(" (attempt %d, next %s)", r.Attempt, *r.RetryTime)
		}
		owner, lastErr := "-", "-"
		if r.Owner != nil {
			owner = *r.Owner
		}
		if r.LastError != nil {
			lastErr = oneLine(*r.LastError)
			if r.LastErrorTime != nil {
				lastErr = *r.LastErrorTime + " " + lastErr
			}
		}
		age := (time.Duration(r.Lag.Seconds * float64(time.Second))).Round(time.Millisecond).String()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%s\t%s\n", r.Name, r.Source, r.Endpoint, state, r.Checkpoint,
			r.Lag.Messages, age, r.Delivered, r.Failed, r.DeadLettered, owner, lastErr)
	}
	return tw.Flush()
}

// printDeadLetters prints every dead letter of a route, page by page.
func printDeadLetters(ctx context.Context, c *client.Client, route string, asJSON bool, w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	var after int64
	n := 0
	for {
		p, err := c.HubDeadLetters(ctx, route, after, 0)
		if err != nil {
			return err
		}
		for _, d := range p.DeadLetters {
			n++
			if asJSON {
				if err := enc.Encode(d); err != nil {
					return err
				}
			} else if _, err := fmt.Fprintf(w, "%s  dead-lettered %s: %s\n", eventLine(d.Message), d.Time, oneLine(d.Reason)); err != nil {
				return err
			}
		}
		if len(p.DeadLetters) == 0 || p.Next <= after {
			break
		}
		after = p.Next
	}
	if n == 0 && !asJSON {
		_, err := fmt.Fprintf(w, "route %s has no dead letters\n", route)
		return err
	}
	return nil
}

func oneLine(s string) string {
	if strings.ContainsAny(s, "\r\n\t") {
		return strconv.Quote(s)
	}
	return s
}
