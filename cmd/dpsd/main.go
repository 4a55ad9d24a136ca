// Command dpsd is the dps server: a self-hosted Device Provisioning Service
// that speaks the Azure IoT Hub DPS wire protocol.
//
//	dpsd [--config dpsd.yaml]
//	dpsd --check-config [--config dpsd.yaml]
//	dpsd --version
//	dpsd --healthcheck [--config dpsd.yaml]
//
// With no configuration it starts a working instance with embedded defaults
// (SQLite in ./dps-data, generated TLS, ID scope and owner key, one example
// linked hub) and prints what a user needs to connect.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/opendps/dps/internal/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "dpsd:", err)
		os.Exit(1)
	}
}

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dpsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "path of the YAML configuration file (none: embedded defaults)")
	check := fs.Bool("check-config", false, "validate the configuration and the files it names, without starting; exit 0 with \"configuration OK\"")
	version := fs.Bool("version", false, "print the version (module version, VCS revision and time, Go version) and exit")
	health := fs.Bool("healthcheck", false, "ask the admin listener's /readyz (listen.admin of the configuration); exit 0 only when it answers 200 (the container image's HEALTHCHECK)")
	ceilingMode := fs.Bool("ceiling", false, "benchmark ceiling: serve the device API with no authentication, storage or allocation (see docs/benchmarks.md)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *version {
		fmt.Fprintln(stdout, buildinfo.Read().String("dpsd"))
		return nil
	}
	if *health {
		return healthcheck(ctx, *configPath, getenv, stdout)
	}
	if *check {
		return checkConfig(*configPath, getenv, stdout, stderr, time.Now())
	}
	cfg, err := loadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	if *ceilingMode {
		return runCeiling(ctx, cfg, stdout, stderr)
	}
	srv, err := start(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	srv.printBanner(stdout)
	<-ctx.Done()
	srv.log.Info("dpsd shutting down", "reason", context.Cause(ctx))
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	began := time.Now()
	err = srv.Close(sctx)
	srv.log.Info("dpsd stopped", "duration", time.Since(began).Round(time.Millisecond), "err", err)
	return err
}
