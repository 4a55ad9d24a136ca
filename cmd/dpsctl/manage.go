package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/wire"
	"github.com/spf13/cobra"
)

// svcFlags are the flags every management command shares.
type svcFlags struct {
	connectionString string
	endpoint         string
	output           string
	showKeys         bool
	tls              tlsFlags
}

func (f *svcFlags) add(cmd *cobra.Command) {
	p := cmd.PersistentFlags()
	p.StringVar(&f.connectionString, "connection-string", "", "service connection string HostName=…;SharedAccessKeyName=…;SharedAccessKey=… [$DPS_CONNECTION_STRING]")
	p.StringVar(&f.endpoint, "endpoint", "", "service URL when it differs from https://HostName (for example https://127.0.0.1:8443)")
	p.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	p.BoolVar(&f.showKeys, "show-keys", false, "print symmetric keys (fetched from attestationmechanism)")
	p.StringVar(&f.tls.caFile, "ca-file", os.Getenv("DPS_CA_FILE"), "PEM file of an extra CA to trust [$DPS_CA_FILE]")
	p.BoolVar(&f.tls.insecure, "insecure", false, "do not verify the server certificate (tests only)")
}

func (f *svcFlags) client() (*client.Client, error) {
	cs := f.connectionString
	if cs == "" {
		cs = os.Getenv("DPS_CONNECTION_STRING")
	}
	if cs == "" {
		return nil, errors.New("a service connection string is required: --connection-string or $DPS_CONNECTION_STRING (dpsd prints it at start)")
	}
	c, err := client.FromConnectionString(cs)
	if err != nil {
		return nil, err
	}
	if f.endpoint != "" {
		c.Endpoint = f.endpoint
	}
	if c.HTTP, err = f.tls.client(30 * time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

func (f *svcFlags) json() bool { return strings.EqualFold(f.output, "json") }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// settingsFlags are the enrollment settings create and update accept.
type settingsFlags struct {
	attestation, primaryKey, secondaryKey, cert, secondaryCert, caRef, endorsementKey string
	policy, webhookURL, webhookAPIVersion, twinFile, reprovision, deviceID            string
	hubs                                                                              []string
	disabled, enabled, edge                                                           bool
}

func (s *settingsFlags) add(cmd *cobra.Command, group bool) {
	f := cmd.Flags()
	f.StringVar(&s.attestation, "attestation", "symmetricKey", "symmetricKey, x509 or tpm")
	f.StringVar(&s.primaryKey, "primary-key", "", "symmetric primary key (base64; generated when absent)")
	f.StringVar(&s.secondaryKey, "secondary-key", "", "symmetric secondary key (base64; generated when absent)")
	if group {
		f.StringVar(&s.cert, "cert", "", "X.509 signing certificate file (PEM): devices' chains must end at it")
		f.StringVar(&s.secondaryCert, "secondary-cert", "", "secondary X.509 signing certificate file (PEM)")
		f.StringVar(&s.caRef, "ca-ref", "", "name of a verified CA certificate held by dps")
	} else {
		f.StringVar(&s.cert, "cert", "", "X.509 device certificate file (PEM)")
		f.StringVar(&s.secondaryCert, "secondary-cert", "", "secondary X.509 device certificate file (PEM)")
		f.StringVar(&s.endorsementKey, "endorsement-key", "", "TPM endorsement key (base64 TPM2B_PUBLIC)")
		f.StringVar(&s.deviceID, "device-id", "", "IoT hub device ID (default: the registration ID)")
	}
	f.StringVar(&s.policy, "allocation-policy", "", "hashed, geoLatency, static or custom (default: the instance's)")
	f.StringSliceVar(&s.hubs, "hub", nil, "linked IoT hub the device may be assigned to (repeat)")
	f.StringVar(&s.webhookURL, "webhook-url", "", "custom allocation webhook URL (with --allocation-policy custom)")
	f.StringVar(&s.webhookAPIVersion, "webhook-api-version", "2021-10-01", "API version of the enrollment sent to the webhook")
	f.StringVar(&s.twinFile, "initial-twin", "", "file with the initial twin JSON {\"tags\":…,\"properties\":{\"desired\":…}}")
	f.StringVar(&s.reprovision, "reprovision", "", "re-registration policy: migrate (default), reset or never")
	f.BoolVar(&s.disabled, "disabled", false, "disable provisioning")
	f.BoolVar(&s.enabled, "enabled", false, "enable provisioning (update)")
	f.BoolVar(&s.edge, "edge", false, "the device is an IoT Edge device")
}

func readCert(path string) (*wire.X509CertificateWithInfo, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return &wire.X509CertificateWithInfo{Certificate: string(b)}, nil
}

// apply writes the flags that were set onto the shared members of an
// enrollment or group. On create every flag applies; on update only those
// the user gave.
func (s *settingsFlags) apply(cmd *cobra.Command, group bool, att **wire.AttestationMechanism, caps **wire.DeviceCapabilities,
	twin *json.RawMessage, status *string, rp **wire.ReprovisionPolicy, policy *string, hubs *[]string, cad **wire.CustomAllocationDefinition) error {
	ch := func(name string) bool { return cmd.Flags().Changed(name) }
	create := cmd.Name() == "create"
	if create || ch("attestation") || ch("primary-key") || ch("secondary-key") || ch("cert") || ch("secondary-cert") || ch("ca-ref") || ch("endorsement-key") {
		a := &wire.AttestationMechanism{Type: s.attestation}
		switch strings.ToLower(s.attestation) {
		case "symmetrickey":
			a.SymmetricKey = &wire.SymmetricKeyAttestation{PrimaryKey: s.primaryKey, SecondaryKey: s.secondaryKey}
		case "x509":
			p, err := readCert(s.cert)
			if err != nil {
				return err
			}
			sc, err := readCert(s.secondaryCert)
			if err != nil {
				return err
			}
			a.X509 = &wire.X509Attestation{}
			switch {
			case s.caRef != "":
				a.X509.CAReferences = &wire.X509CAReferences{Primary: s.caRef}
			case group:
				a.X509.SigningCertificates = &wire.X509Certificates{Primary: p, Secondary: sc}
			default:
				a.X509.ClientCertificates = &wire.X509Certificates{Primary: p, Secondary: sc}
			}
		case "tpm":
			a.TPM = &wire.TPMAttestation{EndorsementKey: s.endorsementKey}
		default:
			return fmt.Errorf("--attestation %q: want symmetricKey, x509 or tpm", s.attestation)
		}
		*att = a
	}
	if create || ch("edge") {
		*caps = &wire.DeviceCapabilities{IoTEdge: s.edge}
	}
	if s.twinFile != "" {
		b, err := os.ReadFile(s.twinFile)
		if err != nil {
			return err
		}
		if !json.Valid(b) {
			return fmt.Errorf("--initial-twin %s is not valid JSON", s.twinFile)
		}
		*twin = b
	}
	switch {
	case s.disabled && s.enabled:
		return errors.New("--enabled and --disabled exclude each other")
	case s.disabled:
		*status = "disabled"
	case s.enabled || create:
		*status = "enabled"
	}
	if s.reprovision != "" {
		t, f := true, false
		switch strings.ToLower(s.reprovision) {
		case "migrate":
			*rp = &wire.ReprovisionPolicy{UpdateHubAssignment: &t, MigrateDeviceData: &t}
		case "reset":
			*rp = &wire.ReprovisionPolicy{UpdateHubAssignment: &t, MigrateDeviceData: &f}
		case "never":
			*rp = &wire.ReprovisionPolicy{UpdateHubAssignment: &f, MigrateDeviceData: &f}
		default:
			return fmt.Errorf("--reprovision %q: want migrate, reset or never", s.reprovision)
		}
	}
	if ch("allocation-policy") {
		*policy = s.policy
	}
	if ch("hub") {
		*hubs = s.hubs
	}
	if ch("webhook-url") || ch("webhook-api-version") {
		if s.webhookURL == "" {
			return errors.New("--webhook-url is required with --webhook-api-version")
		}
		*cad = &wire.CustomAllocationDefinition{WebhookURL: s.webhookURL, APIVersion: s.webhookAPIVersion}
	}
	return nil
}

func keysOf(a *wire.AttestationMechanism) (string, string) {
	if a == nil || a.SymmetricKey == nil {
		return "", ""
	}
	return a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey
}

func hideKeys(a *wire.AttestationMechanism) {
	if a != nil && a.SymmetricKey != nil {
		a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey = "", ""
	}
}

func printEnrollments(w io.Writer, showKeys bool, es ...wire.IndividualEnrollment) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGISTRATION ID\tATTESTATION\tSTATUS\tPOLICY\tHUBS\tREGISTRATION")
	for _, e := range es {
		reg := "-"
		if e.RegistrationState != nil {
			reg = string(e.RegistrationState.Status)
			if e.RegistrationState.AssignedHub != "" {
				reg += " → " + e.RegistrationState.AssignedHub
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.RegistrationID, e.Attestation.Type, e.ProvisioningStatus, dash(e.AllocationPolicy), dash(strings.Join(e.IoTHubs, ",")), reg)
	}
	tw.Flush()
	for _, e := range es {
		if p, s := keysOf(e.Attestation); showKeys && p != "" {
			fmt.Fprintf(w, "\n%s primary key:   %s\n%s secondary key: %s\n", e.RegistrationID, p, e.RegistrationID, s)
		}
	}
}

func printGroups(w io.Writer, showKeys bool, gs ...wire.EnrollmentGroup) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP ID\tATTESTATION\tSTATUS\tPOLICY\tHUBS")
	for _, g := range gs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", g.EnrollmentGroupID, g.Attestation.Type, g.ProvisioningStatus, dash(g.AllocationPolicy), dash(strings.Join(g.IoTHubs, ",")))
	}
	tw.Flush()
	for _, g := range gs {
		if p, s := keysOf(g.Attestation); showKeys && p != "" {
			fmt.Fprintf(w, "\n%s primary key:   %s\n%s secondary key: %s\n", g.EnrollmentGroupID, p, g.EnrollmentGroupID, s)
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newEnrollment() *cobra.Command {
	var sf svcFlags
	cmd := &cobra.Command{Use: "enrollment", Aliases: []string{"enrollments"}, Short: "Manage individual enrollments"}
	sf.add(cmd)

	out := func(cmd *cobra.Command, e wire.IndividualEnrollment) error {
		if !sf.showKeys {
			hideKeys(e.Attestation)
		}
		if sf.json() {
			return printJSON(cmd.OutOrStdout(), e)
		}
		printEnrollments(cmd.OutOrStdout(), sf.showKeys, e)
		return nil
	}
	withKeys := func(ctx context.Context, c *client.Client, e *wire.IndividualEnrollment) error {
		if !sf.showKeys || e.Attestation == nil || e.Attestation.Type != "symmetricKey" {
			return nil
		}
		a, err := c.EnrollmentAttestation(ctx, e.RegistrationID)
		if err == nil {
			e.Attestation = &a
		}
		return err
	}

	var create settingsFlags
	createCmd := &cobra.Command{
		Use:     "create REGISTRATION_ID",
		Short:   "Create an individual enrollment",
		Args:    cobra.ExactArgs(1),
		Example: `  dpsctl enrollment create dev-1 --show-keys\n  dpsctl enrollment create dev-2 --allocation-policy custom --webhook-url https://alloc.local/api --hub hub-a.example.net`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			e := wire.IndividualEnrollment{RegistrationID: args[0], DeviceID: create.deviceID}
			if err := create.apply(cmd, false, &e.Attestation, &e.Capabilities, &e.InitialTwin, &e.ProvisioningStatus, &e.ReprovisionPolicy, &e.AllocationPolicy, &e.IoTHubs, &e.CustomAllocationDefinition); err != nil {
				return err
			}
			got, err := c.PutEnrollment(cmd.Context(), e, "")
			if err != nil {
				return err
			}
			return out(cmd, got)
		},
	}
	create.add(createCmd, false)

	var update settingsFlags
	updateCmd := &cobra.Command{
		Use:   "update REGISTRATION_ID",
		Short: "Change an individual enrollment (keys are kept unless given)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			e, err := c.Enrollment(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			e.RegistrationState = nil
			if cmd.Flags().Changed("device-id") {
				e.DeviceID = update.deviceID
			}
			if err := update.apply(cmd, false, &e.Attestation, &e.Capabilities, &e.InitialTwin, &e.ProvisioningStatus, &e.ReprovisionPolicy, &e.AllocationPolicy, &e.IoTHubs, &e.CustomAllocationDefinition); err != nil {
				return err
			}
			got, err := c.PutEnrollment(cmd.Context(), e, e.ETag)
			if err != nil {
				return err
			}
			return out(cmd, got)
		},
	}
	update.add(updateCmd, false)

	showCmd := &cobra.Command{
		Use:   "show REGISTRATION_ID",
		Short: "Show an individual enrollment",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			e, err := c.Enrollment(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := withKeys(cmd.Context(), c, &e); err != nil {
				return err
			}
			return out(cmd, e)
		},
	}
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List individual enrollments",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			var all []wire.IndividualEnrollment
			cont := ""
			for {
				page, p, err := c.QueryEnrollments(cmd.Context(), 100, cont)
				if err != nil {
					return err
				}
				for i := range page {
					if err := withKeys(cmd.Context(), c, &page[i]); err != nil {
						return err
					}
				}
				all = append(all, page...)
				if cont = p.Continuation; cont == "" {
					break
				}
			}
			if sf.json() {
				if all == nil {
					all = []wire.IndividualEnrollment{}
				}
				return printJSON(cmd.OutOrStdout(), all)
			}
			printEnrollments(cmd.OutOrStdout(), sf.showKeys, all...)
			return nil
		},
	}
	var etag string
	deleteCmd := &cobra.Command{
		Use:   "delete REGISTRATION_ID",
		Short: "Delete an individual enrollment",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			if err := c.DeleteEnrollment(cmd.Context(), args[0], etag); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted enrollment %s\n", args[0])
			return nil
		},
	}
	deleteCmd.Flags().StringVar(&etag, "etag", "", "delete only if the enrollment still has this etag")
	cmd.AddCommand(createCmd, showCmd, listCmd, updateCmd, deleteCmd)
	return cmd
}

func newGroup() *cobra.Command {
	var sf svcFlags
	cmd := &cobra.Command{Use: "group", Aliases: []string{"groups", "enrollment-group"}, Short: "Manage enrollment groups"}
	sf.add(cmd)
	out := func(cmd *cobra.Command, g wire.EnrollmentGroup) error {
		if !sf.showKeys {
			hideKeys(g.Attestation)
		}
		if sf.json() {
			return printJSON(cmd.OutOrStdout(), g)
		}
		printGroups(cmd.OutOrStdout(), sf.showKeys, g)
		return nil
	}
	withKeys := func(ctx context.Context, c *client.Client, g *wire.EnrollmentGroup) error {
		if !sf.showKeys || g.Attestation == nil || g.Attestation.Type != "symmetricKey" {
			return nil
		}
		a, err := c.GroupAttestation(ctx, g.EnrollmentGroupID)
		if err == nil {
			g.Attestation = &a
		}
		return err
	}
	var create settingsFlags
	createCmd := &cobra.Command{
		Use:   "create GROUP_ID",
		Short: "Create an enrollment group",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			g := wire.EnrollmentGroup{EnrollmentGroupID: args[0]}
			if err := create.apply(cmd, true, &g.Attestation, &g.Capabilities, &g.InitialTwin, &g.ProvisioningStatus, &g.ReprovisionPolicy, &g.AllocationPolicy, &g.IoTHubs, &g.CustomAllocationDefinition); err != nil {
				return err
			}
			got, err := c.PutGroup(cmd.Context(), g, "")
			if err != nil {
				return err
			}
			return out(cmd, got)
		},
	}
	create.add(createCmd, true)
	var update settingsFlags
	updateCmd := &cobra.Command{
		Use:   "update GROUP_ID",
		Short: "Change an enrollment group (keys are kept unless given)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			g, err := c.Group(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := update.apply(cmd, true, &g.Attestation, &g.Capabilities, &g.InitialTwin, &g.ProvisioningStatus, &g.ReprovisionPolicy, &g.AllocationPolicy, &g.IoTHubs, &g.CustomAllocationDefinition); err != nil {
				return err
			}
			got, err := c.PutGroup(cmd.Context(), g, g.ETag)
			if err != nil {
				return err
			}
			return out(cmd, got)
		},
	}
	update.add(updateCmd, true)
	showCmd := &cobra.Command{
		Use:   "show GROUP_ID",
		Short: "Show an enrollment group",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			g, err := c.Group(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := withKeys(cmd.Context(), c, &g); err != nil {
				return err
			}
			return out(cmd, g)
		},
	}
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List enrollment groups",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			var all []wire.EnrollmentGroup
			cont := ""
			for {
				page, p, err := c.QueryGroups(cmd.Context(), 100, cont)
				if err != nil {
					return err
				}
				for i := range page {
					if err := withKeys(cmd.Context(), c, &page[i]); err != nil {
						return err
					}
				}
				all = append(all, page...)
				if cont = p.Continuation; cont == "" {
					break
				}
			}
			if sf.json() {
				if all == nil {
					all = []wire.EnrollmentGroup{}
				}
				return printJSON(cmd.OutOrStdout(), all)
			}
			printGroups(cmd.OutOrStdout(), sf.showKeys, all...)
			return nil
		},
	}
	var etag string
	deleteCmd := &cobra.Command{
		Use:   "delete GROUP_ID",
		Short: "Delete an enrollment group",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			if err := c.DeleteGroup(cmd.Context(), args[0], etag); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted enrollment group %s\n", args[0])
			return nil
		},
	}
	deleteCmd.Flags().StringVar(&etag, "etag", "", "delete only if the group still has this etag")
	cmd.AddCommand(createCmd, showCmd, listCmd, updateCmd, deleteCmd)
	return cmd
}

func printRegistrations(w io.Writer, rs ...wire.DeviceRegistrationState) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGISTRATION ID\tSTATUS\tSUBSTATUS\tHUB\tDEVICE ID\tERROR\tUPDATED")
	for _, r := range rs {
		errText := "-"
		if r.ErrorCode != 0 {
			errText = fmt.Sprintf("%d %s", r.ErrorCode, r.ErrorMessage)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.RegistrationID, r.Status, dash(string(r.Substatus)), dash(r.AssignedHub), dash(r.DeviceID), errText, r.LastUpdatedDateTimeUtc)
	}
	tw.Flush()
}

func newRegistration() *cobra.Command {
	var sf svcFlags
	cmd := &cobra.Command{Use: "registration", Aliases: []string{"registrations"}, Short: "Inspect and delete device registration states"}
	sf.add(cmd)
	showCmd := &cobra.Command{
		Use:   "show REGISTRATION_ID",
		Short: "Show a device's registration state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			r, err := c.Registration(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if sf.json() {
				return printJSON(cmd.OutOrStdout(), r)
			}
			printRegistrations(cmd.OutOrStdout(), r)
			return nil
		},
	}
	listCmd := &cobra.Command{
		Use:   "list GROUP_ID",
		Short: "List the registration states of an enrollment group's devices",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			var all []wire.DeviceRegistrationState
			cont := ""
			for {
				page, p, err := c.QueryRegistrations(cmd.Context(), args[0], 100, cont)
				if err != nil {
					return err
				}
				all = append(all, page...)
				if cont = p.Continuation; cont == "" {
					break
				}
			}
			if sf.json() {
				if all == nil {
					all = []wire.DeviceRegistrationState{}
				}
				return printJSON(cmd.OutOrStdout(), all)
			}
			printRegistrations(cmd.OutOrStdout(), all...)
			return nil
		},
	}
	deleteCmd := &cobra.Command{
		Use:   "delete REGISTRATION_ID",
		Short: "Delete a registration state (the device's next registration is an initial assignment)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			if err := c.DeleteRegistration(cmd.Context(), args[0], ""); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted registration state %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(showCmd, listCmd, deleteCmd)
	return cmd
}
