package main

import (
	"fmt"

	"github.com/opendps/dps/internal/buildinfo"
	"github.com/spf13/cobra"
)

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print dpsctl's version: module version, VCS revision and time, Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), buildinfo.Read().String("dpsctl"))
			return nil
		},
	}
}
