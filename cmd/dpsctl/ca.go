package main

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/opendps/dps/internal/wire"
	"github.com/spf13/cobra"
)

func printCAs(w io.Writer, cs ...wire.CACertificate) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSUBJECT\tVERIFIED\tNOT AFTER\tSHA-256 THUMBPRINT\tVERIFICATION CODE")
	for _, c := range cs {
		subject, notAfter, thumb := "-", "-", "-"
		if c.Info != nil {
			subject, notAfter, thumb = c.Info.SubjectName, c.Info.NotAfterUtc, c.Info.SHA256Thumbprint
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\n", c.Name, subject, c.IsVerified, notAfter, thumb, dash(c.VerificationCode))
	}
	tw.Flush()
}

// newCA manages CA certificates held by dps for enrollment groups'
// caReferences, verified by proof of possession.
func newCA() *cobra.Command {
	var sf svcFlags
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Manage CA certificates held by dps (verified by proof of possession, for X.509 groups' caReferences)",
		Long: `A CA certificate becomes usable by enrollment groups (x509.caReferences) once you prove you hold
its key: "dpsctl ca add", then "dpsctl ca code" prints a verification code; sign a certificate with the
CA whose subject CN is that code, and upload it with "dpsctl ca verify".`,
	}
	sf.add(cmd)
	out := func(cmd *cobra.Command, c wire.CACertificate) error {
		if sf.json() {
			return printJSON(cmd.OutOrStdout(), c)
		}
		printCAs(cmd.OutOrStdout(), c)
		return nil
	}
	var certFile string
	add := &cobra.Command{
		Use:   "add NAME --cert FILE",
		Short: "Add (or replace) a CA certificate",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			pem, err := os.ReadFile(certFile)
			if err != nil {
				return err
			}
			got, err := c.PutCA(cmd.Context(), args[0], string(pem), "*")
			if err != nil {
				return err
			}
			return out(cmd, got)
		},
	}
	add.Flags().StringVar(&certFile, "cert", "", "PEM file of the CA certificate")
	add.MarkFlagRequired("cert")
	code := &cobra.Command{
		Use:   "code NAME",
		Short: "Generate a verification code (the CN of the proof-of-possession certificate)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			got, err := c.GenerateVerificationCode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if sf.json() {
				return printJSON(cmd.OutOrStdout(), got)
			}
			fmt.Fprintln(cmd.OutOrStdout(), got.VerificationCode)
			return nil
		},
	}
	var proofFile string
	verify := &cobra.Command{
		Use:   "verify NAME --cert FILE",
		Short: "Upload the proof-of-possession certificate (signed by the CA, CN = the verification code)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			pem, err := os.ReadFile(proofFile)
			if err != nil {
				return err
			}
			got, err := c.VerifyCA(cmd.Context(), args[0], string(pem))
			if err != nil {
				return err
			}
			return out(cmd, got)
		},
	}
	verify.Flags().StringVar(&proofFile, "cert", "", "PEM file of the verification certificate")
	verify.MarkFlagRequired("cert")
	list := &cobra.Command{
		Use:   "list",
		Short: "List CA certificates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			cs, err := c.CAs(cmd.Context())
			if err != nil {
				return err
			}
			if sf.json() {
				if cs == nil {
					cs = []wire.CACertificate{}
				}
				return printJSON(cmd.OutOrStdout(), cs)
			}
			printCAs(cmd.OutOrStdout(), cs...)
			return nil
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a CA certificate (groups referencing it stop accepting devices)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			if err := c.DeleteCA(cmd.Context(), args[0], ""); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted CA certificate %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(add, code, verify, list, del)
	return cmd
}
