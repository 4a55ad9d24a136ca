package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// newHubQuery is `dpsctl hub query`: IoT Hub's query language over a
// built-in hub's twins (POST /devices/query), every page or one.
func newHubQuery() *cobra.Command {
	var (
		h        hubFlags
		pageSize int
		onePage  bool
	)
	cmd := &cobra.Command{
		Use:   "query <query>",
		Short: "Query the twins of a built-in hub (IoT Hub's query language)",
		Example: `  dpsctl hub query "SELECT * FROM devices WHERE tags.site = 'lab'"
  dpsctl hub query "SELECT COUNT() AS n FROM devices WHERE properties.reported.fw = '1.2'"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if h.output != "text" && h.output != "json" {
				return fmt.Errorf("--output %q: want text or json", h.output)
			}
			c, err := hubClient(h.connectionString, h.hubName, h.endpoint, h.tf)
			if err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]string{"query": args[0]})
			var all []json.RawMessage
			continuation := ""
			for {
				hdr := map[string]string{}
				if pageSize > 0 {
					hdr["x-ms-max-item-count"] = fmt.Sprint(pageSize)
				}
				if continuation != "" {
					hdr["x-ms-continuation"] = continuation
				}
				data, rh, err := c.HubCall(cmd.Context(), "POST", "/devices/query", hdr, body)
				if err != nil {
					return err
				}
				var page []json.RawMessage
				if err := json.Unmarshal(data, &page); err != nil {
					return fmt.Errorf("the hub's answer is not a JSON array: %w", err)
				}
				all = append(all, page...)
				continuation = rh.Get("x-ms-continuation")
				if continuation == "" || onePage {
					break
				}
			}
			out := cmd.OutOrStdout()
			if h.output == "json" {
				b, _ := json.Marshal(all)
				return printHubJSON(out, b)
			}
			for _, item := range all {
				var t struct {
					DeviceID string          `json:"deviceId"`
					Status   string          `json:"status"`
					Tags     json.RawMessage `json:"tags"`
				}
				if json.Unmarshal(item, &t) == nil && t.DeviceID != "" {
					fmt.Fprintf(out, "%s\t%s\t%s\n", t.DeviceID, t.Status, strings.TrimSpace(string(t.Tags)))
					continue
				}
				fmt.Fprintln(out, string(item)) // COUNT() rows and projections
			}
			if onePage && continuation != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "more results: run without --one-page")
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&pageSize, "page-size", 0, "items per request (x-ms-max-item-count; default the hub's, 100)")
	cmd.Flags().BoolVar(&onePage, "one-page", false, "read the first page only")
	h.add(cmd)
	return cmd
}
