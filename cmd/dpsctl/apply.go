package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/manifest"
	"github.com/spf13/cobra"
)

// targetFlags say which service apply, export and import work on: the
// DPS service API and, for hub devices, built-in hubs' service APIs.
type targetFlags struct {
	svc  svcFlags
	hubs []string
}

func (f *targetFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.svc.connectionString, "connection-string", "", "service connection string HostName=…;SharedAccessKeyName=…;SharedAccessKey=… [$DPS_CONNECTION_STRING]")
	fl.StringVar(&f.svc.endpoint, "endpoint", "", "service URL when it differs from https://HostName (for example https://127.0.0.1:8443); also the built-in hubs'")
	fl.StringVar(&f.svc.tls.caFile, "ca-file", os.Getenv("DPS_CA_FILE"), "PEM file of an extra CA to trust [$DPS_CA_FILE]")
	fl.BoolVar(&f.svc.tls.insecure, "insecure", false, "do not verify the server certificate (tests only)")
	fl.StringArrayVar(&f.hubs, "hub-connection-string", nil, "a built-in hub's connection string (an access policy with RegistryRead, RegistryWrite and ServiceConnect), for its hub devices; repeat for several hubs [$DPS_HUB_CONNECTION_STRING]")
}

func (f *targetFlags) target() (*manifest.Target, error) {
	c, err := f.svc.client()
	if err != nil {
		return nil, err
	}
	t := &manifest.Target{Service: c, Hubs: map[string]*client.Client{}}
	hubs := f.hubs
	if len(hubs) == 0 && os.Getenv("DPS_HUB_CONNECTION_STRING") != "" {
		hubs = []string{os.Getenv("DPS_HUB_CONNECTION_STRING")}
	}
	for _, cs := range hubs {
		h, err := client.FromConnectionString(cs)
		if err != nil {
			return nil, fmt.Errorf("--hub-connection-string: %w", err)
		}
		if f.svc.endpoint != "" {
			h.Endpoint = f.svc.endpoint
		}
		h.HTTP = c.HTTP
		t.Hubs[h.HostName] = h
	}
	return t, nil
}

// readManifest parses the file at path ("-": standard input).
func readManifest(cmd *cobra.Command, path string) (*manifest.Manifest, error) {
	if path == "" {
		return nil, errors.New("-f FILE is required")
	}
	if path == "-" {
		return manifest.ParseFile("(standard input)", cmd.InOrStdin(), os.Getenv)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return manifest.ParseFile(path, f, os.Getenv)
}

// printStep prints a step that was applied (or failed).
func printStep(w io.Writer, s manifest.Step, err error) {
	if err != nil {
		fmt.Fprintf(w, "! %s %s failed: %v\n", s.Action, s.Item.Name(), err)
		return
	}
	switch s.Action {
	case manifest.Create:
		fmt.Fprintf(w, "+ created %s\n", s.Item.Name())
	case manifest.Update:
		fmt.Fprintf(w, "~ updated %s\n", s.Item.Name())
		for _, c := range s.Changes {
			fmt.Fprintf(w, "    %s\n", c)
		}
	case manifest.Delete:
		fmt.Fprintf(w, "- deleted %s\n", s.Item.Name())
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(w, "  warning: %s: %s\n", s.Item.Name(), warn)
	}
}

// applyManifest plans m against t and applies it (or, dryRun, prints the
// plan). It fails when any object failed.
func applyManifest(cmd *cobra.Command, m *manifest.Manifest, t *manifest.Target, prune, dryRun bool) error {
	out := cmd.OutOrStdout()
	plan, err := manifest.NewPlan(cmd.Context(), m, t, manifest.Options{Prune: prune})
	if err != nil {
		return err
	}
	if dryRun {
		plan.Write(out)
		fmt.Fprintln(out, "dry run: nothing was changed")
		_, bad := plan.Counts()
		if bad > 0 {
			return fmt.Errorf("%d object(s) could not be read", bad)
		}
		return nil
	}
	res := plan.Apply(cmd.Context(), t, func(s manifest.Step, err error) { printStep(out, s, err) })
	fmt.Fprintln(out, res)
	if n := len(res.Failures); n > 0 {
		return fmt.Errorf("%d object(s) failed", n)
	}
	return nil
}

func newApply() *cobra.Command {
	var (
		tf            targetFlags
		file          string
		prune, dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Make the service hold the enrollments, groups, CA certificates and hub devices a file declares",
		Long: `Apply a manifest: a YAML or JSON file of enrollments (individual enrollments), enrollmentGroups,
certificates (CA certificates) and hubDevices (built-in hub devices, by hub host name), each in the
service API's own shape (paste what "dpsctl … -o json" prints). Each object is created when the
service has none, updated (with its current ETag) when a member the file gives differs from the
service's, and left alone otherwise: applying the same file twice changes nothing the second time.
Members the file does not give keep the service's values. A hub device's twin (tags and
desired properties) is its initial twin, written when the device is created.

With --prune, what the service holds of the kinds the file manages (those it has a member for,
even an empty list; hub devices per hub) but the file does not name is deleted — except hub
devices that a registration assigned. With --dry-run the plan is printed as a diff (+ create,
~ update with the changed members, - delete) and nothing is changed. Keys are printed as
(changed), never as values.

String values may reference environment variables whose names start with DPSD_ or DPS_, as
${DPSD_SENSOR1_KEY}; no other variable is read, and $${ is a literal ${. An export (JSON
lines) is data: nothing in it is expanded. Each object that fails is reported with the
service's message, and dpsctl exits non-zero.`,
		Example: `  dpsctl apply -f enrollments.yaml --dry-run
  dpsctl apply -f enrollments.yaml --prune
  dpsctl apply -f enrollments.yaml --hub-connection-string "$DPS_HUB_CONNECTION_STRING"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := readManifest(cmd, file)
			if err != nil {
				return err
			}
			t, err := tf.target()
			if err != nil {
				return err
			}
			return applyManifest(cmd, m, t, prune, dryRun)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the manifest (YAML or JSON; - for standard input)")
	cmd.Flags().BoolVar(&prune, "prune", false, "delete what the service holds of the kinds the file manages but the file does not name")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan as a diff and change nothing")
	tf.add(cmd)
	return cmd
}

func newExport() *cobra.Command {
	var (
		tf  targetFlags
		out string
	)
	cmd := &cobra.Command{
		Use:   "export [-o FILE]",
		Short: "Write every enrollment, group, CA certificate, registration state and hub device as JSON lines (a backup: keys included)",
		Long: `Write everything the service holds as JSON lines, one object a line with a kind member:
certificate (CA certificates), group and enrollment (with their symmetric keys), registration
(registration states; not imported) and, for each hub given by --hub-connection-string,
hubDevice (with its keys, hub and twin tags and desired properties). The objects are in the
service API's shapes, so "dpsctl import -f" (or "dpsctl apply -f") reads them back.

The file holds every key: it is a backup — keep it as secret as the service itself. It is
written with mode 0600.`,
		Example: `  dpsctl export -o dps-backup.jsonl --hub-connection-string "$DPS_HUB_CONNECTION_STRING"`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := tf.target()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			where := "standard output"
			if out != "" && out != "-" {
				f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := f.Chmod(0o600); err != nil { // an existing file keeps its mode otherwise
					return err
				}
				w, where = f, out
			}
			counts, err := manifest.Export(cmd.Context(), t, w, nil)
			if err != nil {
				return err
			}
			if f, ok := w.(*os.File); ok && f != os.Stdout {
				if err := f.Close(); err != nil {
					return err
				}
			}
			o := counts.Objects
			fmt.Fprintf(cmd.ErrOrStderr(), "exported %d CA certificate(s), %d group(s), %d enrollment(s), %d registration state(s), %d hub device(s) to %s (keys included: keep it secret)\n",
				o[manifest.Certificate], o[manifest.Group], o[manifest.Enrollment], o[manifest.Registration], o[manifest.HubDevice], where)
			for _, n := range counts.Notes {
				fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file (mode 0600) instead of standard output")
	tf.add(cmd)
	return cmd
}

func newImport() *cobra.Command {
	var (
		tf                                          targetFlags
		file, from, fromEnv, fromEndpoint, stateArg string
		fromTLS                                     tlsFlags
		limit, pageSize                             int
		dryRun                                      bool
		mapHubs                                     []string
	)
	cmd := &cobra.Command{
		Use:   "import (-f FILE | --from CONNECTION_STRING | --from-env NAME)",
		Short: "Create or update enrollments, groups and CA certificates from an export, or copy them from another DPS service",
		Long: `With -f, create or update every object of an export (or a manifest), as apply does but never
deleting: importing the same file twice changes nothing the second time. Registration states in
the file are not imported (the service API cannot create them: devices register again).

With --from, copy the CA certificates, enrollment groups and individual enrollments of another DPS
service API — an Azure DPS or another dps — to this one (the target: --connection-string), with
their symmetric keys (read through the attestation mechanism API, as Azure DPS requires). It
pages with the query API's continuation tokens and records its progress in a state file after
each object: a copy that stopped (interrupted, or after --limit objects) goes on where it stopped
when run again, and the state file is removed once it completes. At the end it reports what
could not be copied and why: CA certificates are copied unverified (prove possession again),
Azure DPS has no certificates API, TPM enrollments' endorsement keys are copied but their
registrations are not, registration states are not copied, members this dpsctl does not know
are copied as they are, and every object the target refused with its message. An object the
target refuses (400, 409, 412, 413, 422) is reported and the copy goes on; any other error (no
answer, 401, 403, 5xx, an interruption) stops the copy before that object, and the next run
copies it.

The source's connection string holds its key: rather than --from (which other users of the
machine may see in the process list), name an environment variable that holds it with
--from-env NAME, or set $DPS_SOURCE_CONNECTION_STRING, which import reads when neither -f,
--from nor --from-env is given. An export (-f with JSON lines) is data: ${…} in its values is
never expanded.`,
		Example: `  dpsctl import -f dps-backup.jsonl
  DPS_SOURCE_CONNECTION_STRING="$(cat azure-dps.cs)" dpsctl import --map-hub my-hub.azure-devices.net=hub.example.net
  dpsctl import --from-env OLD_DPS --from-endpoint https://old.example.net:8443 --from-ca-file old-ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if fromEnv != "" {
				if from != "" {
					return errors.New("give --from or --from-env, not both")
				}
				if from = os.Getenv(fromEnv); from == "" {
					return fmt.Errorf("--from-env %s: the environment variable is not set", fromEnv)
				}
			}
			if file == "" && from == "" {
				from = os.Getenv("DPS_SOURCE_CONNECTION_STRING")
			}
			if (file == "") == (from == "") {
				return errors.New("give exactly one of -f FILE or --from CONNECTION_STRING (or --from-env NAME, or $DPS_SOURCE_CONNECTION_STRING)")
			}
			t, err := tf.target()
			if err != nil {
				return err
			}
			if file != "" {
				m, err := readManifest(cmd, file)
				if err != nil {
					return err
				}
				if m.Registrations > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "note: %d registration state(s) not imported (the service API cannot create them): those devices register again\n", m.Registrations)
				}
				return applyManifest(cmd, m, t, false, dryRun)
			}
			hubMap := map[string]string{}
			for _, m := range mapHubs {
				old, new, ok := strings.Cut(m, "=")
				if !ok || old == "" || new == "" {
					return fmt.Errorf("--map-hub %q: want OLD=NEW", m)
				}
				hubMap[old] = new
			}
			src, err := client.FromConnectionString(from)
			if err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			if fromEndpoint != "" {
				src.Endpoint = fromEndpoint
			}
			if src.HTTP, err = fromTLS.client(60 * time.Second); err != nil {
				return err
			}
			state := stateArg
			if state == "" {
				state = "dpsctl-import-" + regexp.MustCompile(`[^A-Za-z0-9.-]+`).ReplaceAllString(src.HostName, "_") + ".state.json"
			}
			return runCopy(cmd, &manifest.Target{Service: src, PageSize: pageSize}, t, state, limit, hubMap)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "an export (JSON lines) or a manifest to import (- for standard input)")
	f.BoolVar(&dryRun, "dry-run", false, "with -f: print the plan as a diff and change nothing")
	f.StringVar(&from, "from", "", "the source DPS service's connection string HostName=…;SharedAccessKeyName=…;SharedAccessKey=… (its policy needs EnrollmentRead, EnrollmentWrite — for the keys — and ServiceConfig) [$DPS_SOURCE_CONNECTION_STRING]")
	f.StringVar(&fromEnv, "from-env", "", "the name of an environment variable that holds the source's connection string (keeps its key out of the process list)")
	f.StringVar(&fromEndpoint, "from-endpoint", "", "the source's service URL when it differs from https://HostName")
	f.StringVar(&fromTLS.caFile, "from-ca-file", "", "PEM file of an extra CA to trust for the source")
	f.BoolVar(&fromTLS.insecure, "from-insecure", false, "do not verify the source's server certificate (tests only)")
	f.StringVar(&stateArg, "state-file", "", "the file that records the copy's progress, to resume it (default: dpsctl-import-<source host>.state.json)")
	f.IntVar(&limit, "limit", 0, "copy at most this many objects, then stop (run again to go on)")
	f.IntVar(&pageSize, "page-size", 100, "objects per query page read from the source (x-ms-max-item-count)")
	f.StringArrayVar(&mapHubs, "map-hub", nil, "OLD=NEW: rewrite the IoT hub OLD in enrollments' iotHubs and iotHubHostName to NEW (repeat)")
	tf.add(cmd)
	return cmd
}

// runCopy copies src to t with a progress bar (plain lines when standard
// error is not a terminal) and prints the report.
func runCopy(cmd *cobra.Command, src, t *manifest.Target, state string, limit int, hubMap map[string]string) error {
	stderr, out := cmd.ErrOrStderr(), cmd.OutOrStdout()
	fmt.Fprintf(stderr, "copying from %s to %s (progress in %s)\n", src.Service.HostName, t.Service.HostName, state)
	bar := newProgress(stderr)
	rep, err := manifest.Copy(cmd.Context(), src, t, manifest.CopyOptions{
		StateFile: state, Limit: limit, MapHubs: hubMap, Progress: bar.update,
	})
	bar.finish()
	if rep.Resumed {
		fmt.Fprintf(out, "resumed the copy recorded in %s\n", state)
	}
	fmt.Fprintf(out, "copied: %d created, %d updated, %d unchanged, %d failed\n", rep.Created, rep.Updated, rep.Unchanged, len(rep.Failures))
	if len(rep.Notes) > 0 {
		fmt.Fprintln(out, "not copied, or not whole:")
		for _, n := range rep.Notes {
			fmt.Fprintf(out, "  - %s\n", n)
		}
	}
	if len(rep.Failures) > 0 {
		fmt.Fprintln(out, "failed (the target's answer):")
		for _, f := range rep.Failures {
			fmt.Fprintf(out, "  - %s\n", f)
		}
	}
	switch {
	case err != nil && cmd.Context().Err() != nil:
		return fmt.Errorf("interrupted: run the same command again to go on (progress in %s)", state)
	case err != nil:
		return fmt.Errorf("%w (progress in %s: run the same command again to go on)", err, state)
	case rep.Stopped:
		fmt.Fprintf(out, "stopped after --limit %d object(s): run the same command again to go on (progress in %s)\n", limit, state)
	}
	if len(rep.Failures) > 0 {
		return fmt.Errorf("%d object(s) were not copied", len(rep.Failures))
	}
	return nil
}

// progress draws a progress bar per kind on a terminal, or prints plain
// lines (each kind's start and end, and every 100 objects) otherwise.
type progress struct {
	w        io.Writer
	terminal bool
	kind     manifest.Kind
	drawn    bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

// update shows done of total objects of kind; total is -1 until the copy
// has read the kind's last page (the source is not counted ahead).
func (p *progress) update(kind manifest.Kind, done, total int) {
	if kind != p.kind {
		p.finish()
		p.kind = kind
		if !p.terminal {
			fmt.Fprintf(p.w, "%ss: copying\n", kind)
		}
	}
	count := fmt.Sprintf("%d", done)
	if total >= 0 {
		count = fmt.Sprintf("%d of %d", done, total)
	}
	if p.terminal {
		const width = 30
		bar := strings.Repeat(".", width) // not known yet
		if total >= 0 {
			filled := width
			if total > 0 {
				filled = width * done / total
			}
			bar = strings.Repeat("#", filled) + strings.Repeat("-", width-filled)
		}
		fmt.Fprintf(p.w, "\r%-13s [%s] %s copied\x1b[K", string(kind)+"s", bar, count)
		p.drawn = true
		return
	}
	if done > 0 && (done%100 == 0 || done == total) {
		fmt.Fprintf(p.w, "%ss: %s copied\n", kind, count)
	}
}

func (p *progress) finish() {
	if p.terminal && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
