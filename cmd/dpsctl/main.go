// Command dpsctl is the dps command-line tool: it registers devices,
// derives group keys and (with the service API) manages enrollments.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/opendps/dps/device"
	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := newRoot(os.Stdout, os.Stderr)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "dpsctl:", err)
		os.Exit(1)
	}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "dpsctl",
		Short:         "Command-line tool for dps, the self-hosted Device Provisioning Service",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newRegister(), newKeys(), newEnrollment(), newGroup(), newRegistration(), newCA(), newBench(), newHub(), newFaults())
	root.AddCommand(newDevice(), newVersion(), newIssuance())
	root.AddCommand(newApply(), newExport(), newImport()) // apply.go
	root.AddCommand(newEvents())                          // events.go
	return root
}

// tlsFlags are the flags that say how to trust the server.
type tlsFlags struct {
	caFile   string
	insecure bool
}

func (f *tlsFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.caFile, "ca-file", os.Getenv("DPS_CA_FILE"), "PEM file of an extra CA to trust (dpsd prints its generated CA path) [$DPS_CA_FILE]")
	cmd.Flags().BoolVar(&f.insecure, "insecure", false, "do not verify the server certificate (tests only)")
}

func (f *tlsFlags) client(timeout time.Duration) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: f.insecure}
	if f.caFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", f.caFile)
		}
		cfg.RootCAs = pool
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, Proxy: http.ProxyFromEnvironment}, Timeout: timeout}, nil
}

func newRegister() *cobra.Command {
	var (
		endpoint, scope, regID, key, groupKey, payload, apiVersion, transport, mqttAddr string
		csrKey, certOut                                                                 string
		timeout                                                                         time.Duration
		tf                                                                              tlsFlags
	)
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register a device with a symmetric key and print the registration result as JSON",
		Example: `  dpsctl register --endpoint https://localhost --id-scope 0ne00000001 \
    --registration-id dev-1 --group-key "$GROUP_KEY" --payload '{"model":"t1"}' --ca-file dps-data/tls/ca.pem`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if scope == "" || regID == "" {
				return errors.New("--id-scope and --registration-id are required")
			}
			if (key == "") == (groupKey == "") {
				return errors.New("give exactly one of --key (the device key) or --group-key (derive the device key)")
			}
			if groupKey != "" {
				var err error
				if key, err = device.DeriveKey(groupKey, regID); err != nil {
					return err
				}
			}
			var p any
			if payload != "" {
				raw := []byte(payload)
				if rest, ok := strings.CutPrefix(payload, "@"); ok {
					var err error
					if raw, err = os.ReadFile(rest); err != nil {
						return err
					}
				}
				if !json.Valid(raw) {
					return errors.New("--payload is not valid JSON")
				}
				p = json.RawMessage(raw)
			}
			hc, err := tf.client(30 * time.Second)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c := &device.Client{Endpoint: endpoint, IDScope: scope, HTTPClient: hc, APIVersion: apiVersion,
				Transport: transport, MQTTAddress: mqttAddr, TLSConfig: hc.Transport.(*http.Transport).TLSClientConfig}
			var opts []device.RegisterOption
			if csrKey != "" {
				opt, err := csrOption(csrKey, regID)
				if err != nil {
					return err
				}
				opts = append(opts, opt)
				if !cmd.Flags().Changed("api-version") {
					c.APIVersion = device.CSRAPIVersion
				}
			}
			res, err := c.Register(ctx, regID, device.SymmetricKey(key), p, opts...)
			if err != nil {
				return err
			}
			if certOut != "" && res.RegistrationState != nil && len(res.RegistrationState.IssuedCertificateChain) > 0 {
				chain, err := res.RegistrationState.IssuedChainPEM()
				if err != nil {
					return err
				}
				if err := os.WriteFile(certOut, chain, 0o644); err != nil {
					return err
				}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(res); err != nil {
				return err
			}
			if res.Status != "assigned" {
				return fmt.Errorf("registration ended with status %q", res.Status)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&endpoint, "endpoint", "https://localhost", "device endpoint of dps (or Azure DPS)")
	f.StringVar(&scope, "id-scope", "", "ID scope of the instance")
	f.StringVar(&regID, "registration-id", "", "registration ID of the device")
	f.StringVar(&key, "key", "", "device symmetric key (base64)")
	f.StringVar(&groupKey, "group-key", "", "enrollment group key (base64); the device key is derived from it")
	f.StringVar(&payload, "payload", "", "JSON payload to send, or @file")
	f.StringVar(&apiVersion, "api-version", device.DefaultAPIVersion, "device api-version")
	f.DurationVar(&timeout, "timeout", 60*time.Second, "give up after this long")
	f.StringVar(&transport, "transport", "https", "device transport: https, mqtt, or mqttws (MQTT over WebSocket on the HTTPS endpoint)")
	f.StringVar(&mqttAddr, "mqtt-address", "", "host:port of the MQTT endpoint (default: the endpoint's host, port 8883)")
	f.StringVar(&csrKey, "csr-key", "", "send a CSR signed with the PEM private key in FILE (created, ECDSA P-256, when it does not exist): dps issues an operational certificate")
	f.StringVar(&certOut, "cert-out", "", "write the issued certificate chain (PEM, leaf first) to FILE")
	tf.add(cmd)
	return cmd
}

// csrOption reads (or creates) the device key in path and returns the
// option that sends a CSR for regID signed with it.
func csrOption(path, regID string) (device.RegisterOption, error) {
	var key crypto.Signer
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		key = k
	case err != nil:
		return nil, err
	default:
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("--csr-key %s: no PEM private key", path)
		}
		var k any
		switch blk.Type {
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		default:
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("--csr-key %s: %w", path, err)
		}
		var ok bool
		if key, ok = k.(crypto.Signer); !ok {
			return nil, fmt.Errorf("--csr-key %s: not a signing key", path)
		}
	}
	csr, err := device.NewCSR(key, regID)
	if err != nil {
		return nil, err
	}
	return device.WithCSR(csr), nil
}

func newKeys() *cobra.Command {
	keys := &cobra.Command{Use: "keys", Short: "Symmetric key helpers"}
	derive := &cobra.Command{
		Use:   "derive GROUP_KEY REGISTRATION_ID",
		Short: "Print the device key derived from an enrollment group key",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := device.DeriveKey(args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), k)
			return nil
		},
	}
	keys.AddCommand(derive)
	return keys
}
