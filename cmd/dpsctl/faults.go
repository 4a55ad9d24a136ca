package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/opendps/dps/internal/faults"
	"github.com/spf13/cobra"
)

// newFaults manages dpsd's fault injection rules at run time (the service
// API's /faults extension; a policy with ServiceConfig).
func newFaults() *cobra.Command {
	var sf svcFlags
	cmd := &cobra.Command{Use: "faults", Aliases: []string{"fault"}, Short: "List, set and delete fault injection rules (testing device firmware)"}
	sf.add(cmd)
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List the rules with the count of faults each injected",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			list, err := c.Faults(cmd.Context())
			if err != nil {
				return err
			}
			if sf.json() {
				if list == nil {
					list = []faults.Status{}
				}
				return printJSON(cmd.OutOrStdout(), list)
			}
			printFaults(cmd.OutOrStdout(), list...)
			return nil
		},
	}
	var r faults.Rule
	var file string
	setCmd := &cobra.Command{
		Use:   "set NAME",
		Short: "Add or replace a rule (its count starts at 0)",
		Long: `Add or replace a rule, from flags or from a JSON file of the faults: shape:
  dpsctl faults set flaky-register --registration-id 'flaky-*' --operation register --status 429 --error-code 429001 --retry-after 3 --times 2
  dpsctl faults set slow-assign --registration-id 'dev-*' --assigning-polls 3
  dpsctl faults set lost --operation register --drop beforeResponse --probability 0.3
  dpsctl faults set from-file --file rule.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rule := r
			if file != "" {
				var data []byte
				var err error
				if file == "-" {
					data, err = io.ReadAll(cmd.InOrStdin())
				} else {
					data, err = os.ReadFile(file)
				}
				if err != nil {
					return err
				}
				rule = faults.Rule{}
				if err := json.Unmarshal(data, &rule); err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
			}
			rule.Name = args[0]
			if _, err := rule.Validate(); err != nil {
				return err
			}
			c, err := sf.client()
			if err != nil {
				return err
			}
			st, err := c.PutFault(cmd.Context(), rule)
			if err != nil {
				return err
			}
			if sf.json() {
				return printJSON(cmd.OutOrStdout(), st)
			}
			printFaults(cmd.OutOrStdout(), st)
			return nil
		},
	}
	f := setCmd.Flags()
	f.StringVar(&file, "file", "", "JSON file of the rule (- for standard input); replaces the other flags")
	f.StringVar(&r.Match.RegistrationID, "registration-id", "", "registration IDs matched (glob: * ? [a-z])")
	f.StringVar(&r.Match.Enrollment, "enrollment", "", "individual enrollment matched (its registration ID)")
	f.StringVar(&r.Match.Group, "group", "", "enrollment group matched (glob; polls only)")
	f.StringVar(&r.Match.Transport, "transport", "any", "https, mqtt, mqttws or any")
	f.StringVar(&r.Match.Operation, "operation", "", "register, poll, hubConnect, twin or telemetry (empty: any)")
	f.IntVar(&r.Action.Status, "status", 0, "answer this HTTP status (400-599)")
	f.IntVar(&r.Action.ErrorCode, "error-code", 0, "DPS error code of the answer (default status×1000+1)")
	f.IntVar(&r.Action.RetryAfterSeconds, "retry-after", 0, "retry-after seconds of the answer")
	f.IntVar(&r.Action.DelayMs, "delay-ms", 0, "delay the request this many milliseconds")
	f.IntVar(&r.Action.AssigningPolls, "assigning-polls", 0, "answer assigning to the first N polls of an assigned operation")
	f.StringVar(&r.Action.Drop, "drop", "", "drop the connection: beforeResponse or afterConnack (MQTT)")
	f.IntVar(&r.Times, "times", 0, "inject on the first N matches only (0: every match)")
	f.Float64Var(&r.Probability, "probability", 0, "inject with this probability (0: always)")
	deleteCmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a rule and print its last count",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			st, err := c.DeleteFault(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if sf.json() {
				return printJSON(cmd.OutOrStdout(), st)
			}
			printFaults(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cmd.AddCommand(listCmd, setCmd, deleteCmd)
	return cmd
}

func printFaults(w io.Writer, list ...faults.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREGISTRATION ID\tTRANSPORT\tOPERATION\tACTION\tTIMES\tPROBABILITY\tINJECTED")
	for _, s := range list {
		a := s.Action
		action := ""
		switch {
		case a.Status != 0:
			action = fmt.Sprintf("status %d", a.Status)
			if a.ErrorCode != 0 {
				action += fmt.Sprintf(" code %d", a.ErrorCode)
			}
			if a.RetryAfterSeconds != 0 {
				action += fmt.Sprintf(" retry-after %ds", a.RetryAfterSeconds)
			}
		case a.DelayMs != 0:
			action = fmt.Sprintf("delay %dms", a.DelayMs)
		case a.AssigningPolls != 0:
			action = fmt.Sprintf("assigning for %d polls", a.AssigningPolls)
		case a.Drop != "":
			action = "drop " + a.Drop
		}
		times, prob := "every", "1"
		if s.Times > 0 {
			times = fmt.Sprint(s.Times)
		}
		if s.Probability > 0 {
			prob = fmt.Sprint(s.Probability)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", s.Name, dash(s.Match.RegistrationID), dash(s.Match.Transport), dash(s.Match.Operation), action, times, prob, s.Injected)
	}
	tw.Flush()
}
