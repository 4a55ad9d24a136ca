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
	policy, webhookURL, webhookAPIVersion, webhookSecret, twinFile, reprovision       string
	deviceID                                                                          string
	credentialPolicy, certificateAuthority                                            string
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
	f.StringVar(&s.webhookSecret, "webhook-secret", "", "sign this enrollment's webhook requests with this secret (X-Dps-Signature; never shown again)")
	f.StringVar(&s.twinFile, "initial-twin", "", "file with the initial twin JSON {\"tags\":…,\"properties\":{\"desired\":…}}")
	f.StringVar(&s.reprovision, "reprovision", "", "re-registration policy: migrate (default), reset or never")
	f.BoolVar(&s.disabled, "disabled", false, "disable provisioning")
	f.BoolVar(&s.enabled, "enabled", false, "enable provisioning (update)")
	f.BoolVar(&s.edge, "edge", false, "the device is an IoT Edge device")
	f.StringVar(&s.credentialPolicy, "credential-policy", "", "credential policy that issues operational certificates to devices sending a CSR (dpsctl issuance policy; \"\" for none)")
	f.StringVar(&s.certificateAuthority, "certificate-authority", "", "issuing CA of --credential-policy (optional: the policy names it)")
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
	if ch("webhook-url") || ch("webhook-api-version") || ch("webhook-secret") {
		if s.webhookURL == "" && *cad != nil {
			s.webhookURL = (*cad).WebhookURL
		}
		if s.webhookURL == "" {
			return errors.New("--webhook-url is required with --webhook-api-version and --webhook-secret")
		}
		*cad = &wire.CustomAllocationDefinition{WebhookURL: s.webhookURL, APIVersion: s.webhookAPIVersion, SigningSecret: s.webhookSecret}
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

// resource describes how the enrollment and group commands reach one kind
// of record; commands builds create, show, list, update and delete from it.
type resource[T any] struct {
	noun, idArg  string
	group        bool
	newItem      func(id string, f *settingsFlags) T
	fields       func(*T) settingsFields
	id           func(T) string
	etag         func(T) string
	beforeUpdate func(cmd *cobra.Command, v *T, f *settingsFlags)
	// The client calls, as method expressions of *client.Client.
	put    func(c *client.Client, ctx context.Context, v T, ifMatch string) (T, error)
	get    func(c *client.Client, ctx context.Context, id string) (T, error)
	del    func(c *client.Client, ctx context.Context, id, ifMatch string) error
	query  func(c *client.Client, ctx context.Context, max int, cont string) ([]T, client.Page, error)
	attest func(c *client.Client, ctx context.Context, id string) (wire.AttestationMechanism, error)
	print  func(w io.Writer, showKeys bool, vs ...T)
}

// settingsFields points at the members enrollments and groups share.
type settingsFields struct {
	att    **wire.AttestationMechanism
	caps   **wire.DeviceCapabilities
	twin   *json.RawMessage
	status *string
	rp     **wire.ReprovisionPolicy
	policy *string
	hubs   *[]string
	cad    **wire.CustomAllocationDefinition
	names  *wire.IssuanceNames
}

func (s *settingsFlags) applyTo(cmd *cobra.Command, group bool, f settingsFields) error {
	if err := s.apply(cmd, group, f.att, f.caps, f.twin, f.status, f.rp, f.policy, f.hubs, f.cad); err != nil {
		return err
	}
	ch := func(name string) bool { return cmd.Flags().Changed(name) }
	if cmd.Name() == "create" || ch("credential-policy") || ch("certificate-authority") {
		// Both names of the policy (2026-11-01's and 2026-04-01's), so an
		// update does not send back the one it read.
		*f.names = wire.IssuanceNames{CertificatePolicyName: s.credentialPolicy, CredentialPolicyName: s.credentialPolicy, CertificateAuthorityName: s.certificateAuthority}
	}
	return nil
}

func (r resource[T]) commands(cmd *cobra.Command) *cobra.Command {
	var sf svcFlags
	sf.add(cmd)
	out := func(cmd *cobra.Command, v T) error {
		if !sf.showKeys {
			hideKeys(*r.fields(&v).att)
		}
		if sf.json() {
			return printJSON(cmd.OutOrStdout(), v)
		}
		r.print(cmd.OutOrStdout(), sf.showKeys, v)
		return nil
	}
	withKeys := func(ctx context.Context, c *client.Client, v *T) error {
		att := r.fields(v).att
		if !sf.showKeys || *att == nil || (*att).Type != "symmetricKey" {
			return nil
		}
		a, err := r.attest(c, ctx, r.id(*v))
		if err == nil {
			*att = &a
		}
		return err
	}

	var create settingsFlags
	createCmd := &cobra.Command{
		Use:   "create " + r.idArg,
		Short: "Create an " + r.noun,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			v := r.newItem(args[0], &create)
			if err := create.applyTo(cmd, r.group, r.fields(&v)); err != nil {
				return err
			}
			got, err := r.put(c, cmd.Context(), v, "")
			if err != nil {
				return err
			}
			return out(cmd, got)
		},
	}
	create.add(createCmd, r.group)

	var update settingsFlags
	updateCmd := &cobra.Command{
		Use:   "update " + r.idArg,
		Short: "Change an " + r.noun + " (keys are kept unless given)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			v, err := r.get(c, cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if r.beforeUpdate != nil {
				r.beforeUpdate(cmd, &v, &update)
			}
			if err := update.applyTo(cmd, r.group, r.fields(&v)); err != nil {
				return err
			}
			got, err := r.put(c, cmd.Context(), v, r.etag(v))
			if err != nil {
				return err
			}
			return out(cmd, got)
		},
	}
	update.add(updateCmd, r.group)

	showCmd := &cobra.Command{
		Use:   "show " + r.idArg,
		Short: "Show an " + r.noun,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			v, err := r.get(c, cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := withKeys(cmd.Context(), c, &v); err != nil {
				return err
			}
			return out(cmd, v)
		},
	}
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List every " + r.noun,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			all := []T{}
			cont := ""
			for {
				page, p, err := r.query(c, cmd.Context(), 100, cont)
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
				return printJSON(cmd.OutOrStdout(), all)
			}
			r.print(cmd.OutOrStdout(), sf.showKeys, all...)
			return nil
		},
	}
	var etag string
	deleteCmd := &cobra.Command{
		Use:   "delete " + r.idArg,
		Short: "Delete an " + r.noun,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			if err := r.del(c, cmd.Context(), args[0], etag); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s %s\n", r.noun, args[0])
			return nil
		},
	}
	deleteCmd.Flags().StringVar(&etag, "etag", "", "delete only if the record still has this etag")
	cmd.AddCommand(createCmd, showCmd, listCmd, updateCmd, deleteCmd)
	return cmd
}

func newEnrollment() *cobra.Command {
	return resource[wire.IndividualEnrollment]{
		noun: "individual enrollment", idArg: "REGISTRATION_ID",
		newItem: func(id string, f *settingsFlags) wire.IndividualEnrollment {
			return wire.IndividualEnrollment{RegistrationID: id, DeviceID: f.deviceID}
		},
		fields: func(e *wire.IndividualEnrollment) settingsFields {
			return settingsFields{&e.Attestation, &e.Capabilities, &e.InitialTwin, &e.ProvisioningStatus, &e.ReprovisionPolicy, &e.AllocationPolicy, &e.IoTHubs, &e.CustomAllocationDefinition, &e.IssuanceNames}
		},
		id:   func(e wire.IndividualEnrollment) string { return e.RegistrationID },
		etag: func(e wire.IndividualEnrollment) string { return e.ETag },
		beforeUpdate: func(cmd *cobra.Command, e *wire.IndividualEnrollment, f *settingsFlags) {
			e.RegistrationState = nil
			if cmd.Flags().Changed("device-id") {
				e.DeviceID = f.deviceID
			}
		},
		put:    (*client.Client).PutEnrollment,
		get:    (*client.Client).Enrollment,
		del:    (*client.Client).DeleteEnrollment,
		query:  (*client.Client).QueryEnrollments,
		attest: (*client.Client).EnrollmentAttestation,
		print:  printEnrollments,
	}.commands(&cobra.Command{Use: "enrollment", Aliases: []string{"enrollments"}, Short: "Manage individual enrollments",
		Example: "  dpsctl enrollment create dev-1 --show-keys\n  dpsctl enrollment create dev-2 --allocation-policy custom --webhook-url https://alloc.local/api --hub hub-a.example.net"})
}

func newGroup() *cobra.Command {
	return resource[wire.EnrollmentGroup]{
		noun: "enrollment group", idArg: "GROUP_ID", group: true,
		newItem: func(id string, _ *settingsFlags) wire.EnrollmentGroup {
			return wire.EnrollmentGroup{EnrollmentGroupID: id}
		},
		fields: func(g *wire.EnrollmentGroup) settingsFields {
			return settingsFields{&g.Attestation, &g.Capabilities, &g.InitialTwin, &g.ProvisioningStatus, &g.ReprovisionPolicy, &g.AllocationPolicy, &g.IoTHubs, &g.CustomAllocationDefinition, &g.IssuanceNames}
		},
		id:     func(g wire.EnrollmentGroup) string { return g.EnrollmentGroupID },
		etag:   func(g wire.EnrollmentGroup) string { return g.ETag },
		put:    (*client.Client).PutGroup,
		get:    (*client.Client).Group,
		del:    (*client.Client).DeleteGroup,
		query:  (*client.Client).QueryGroups,
		attest: (*client.Client).GroupAttestation,
		print:  printGroups,
	}.commands(&cobra.Command{Use: "group", Aliases: []string{"groups", "enrollment-group"}, Short: "Manage enrollment groups"})
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
