package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/opendps/dps/internal/dpstest"
	"go.yaml.in/yaml/v3"
)

// composeFile is the part of the Compose specification compose.yaml uses;
// the file is decoded with unknown keys refused, so a misspelt key fails
// here (add a key to these types when compose.yaml starts using it).
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Sysctls     map[string]int    `yaml:"sysctls"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		StartPeriod string   `yaml:"start_period"`
		Retries     int      `yaml:"retries"`
	} `yaml:"healthcheck"`
}

// TestCompose checks compose.yaml without a container engine (none runs
// here): it parses, every service it depends on and every named volume is
// declared, every file it mounts exists, both dpsd nodes run the image make
// image tags, with their configuration passing dpsd --check-config in the
// environment compose gives them (plus the image's), and the load balancer
// passes TCP through to both nodes on 443 and 8883, checking /readyz on the
// admin port.
func TestCompose(t *testing.T) {
	dir := root(t)
	raw, err := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for _, name := range []string{"postgres", "node-a", "node-b", "lb"} {
		if _, ok := cf.Services[name]; !ok {
			t.Fatalf("compose.yaml has no service %q", name)
		}
	}
	makefile, err := os.ReadFile(filepath.Join(dir, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	image := regexp.MustCompile(`(?m)^IMAGE \?= (\S+)$`).FindSubmatch(makefile)
	if image == nil {
		t.Fatal("the Makefile sets no default IMAGE")
	}
	dpsd := dpstest.BuildDPSD(t)

	// mounts maps a container path to the repository file mounted there.
	mounts := func(name string, s composeService) map[string]string {
		m := map[string]string{}
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 {
				t.Errorf("%s: volume %q: want SOURCE:TARGET", name, v)
				continue
			}
			src, dst := parts[0], parts[1]
			switch {
			case strings.HasPrefix(src, "./"):
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					t.Errorf("%s mounts %s, which is not in the repository: %v", name, src, err)
				}
				m[dst] = filepath.Join(dir, src)
			case strings.HasPrefix(src, "/"):
				t.Errorf("%s mounts the host path %s: compose.yaml must work from a checkout", name, src)
			default:
				if _, ok := cf.Volumes[src]; !ok {
					t.Errorf("%s uses the volume %q, which compose.yaml does not declare", name, src)
				}
			}
		}
		return m
	}
	nodeIDs := map[string]bool{}
	var nodes []string
	for name, s := range cf.Services {
		if s.Image == "" {
			t.Errorf("service %s has no image", name)
		}
		for dep := range s.DependsOn {
			if _, ok := cf.Services[dep]; !ok {
				t.Errorf("%s depends on %q, which is not a service", name, dep)
			}
		}
		m := mounts(name, s)
		if s.Image != string(image[1]) {
			continue
		}
		nodes = append(nodes, name)
		if len(s.Ports) > 0 {
			t.Errorf("dpsd node %s publishes %v: only the load balancer is reached from outside", name, s.Ports)
		}
		if s.Healthcheck == nil || !slices.Equal(s.Healthcheck.Test, []string{"CMD", "/usr/local/bin/dpsd", "--healthcheck"}) {
			t.Errorf("dpsd node %s: health check %+v, want dpsd --healthcheck", name, s.Healthcheck)
		}
		if len(s.Command) != 2 || s.Command[0] != "--config" || m[s.Command[1]] == "" {
			t.Errorf("dpsd node %s: command %v, want --config and a mounted file", name, s.Command)
			continue
		}
		id := s.Environment["DPSD_NODEID"]
		if id == "" || nodeIDs[id] {
			t.Errorf("dpsd node %s: DPSD_NODEID %q, want one of its own", name, id)
		}
		nodeIDs[id] = true
		// The environment compose gives the container: the image's, then
		// the service's, with ${VAR:?…} / ${VAR:-…} filled in.
		env := []string{"DPSD_DATADIR=/data", "DPSD_LISTEN_ADMIN=:9090", "PATH=" + os.Getenv("PATH")}
		for k, v := range s.Environment {
			env = append(env, k+"="+interpolate(v, map[string]string{"POSTGRES_PASSWORD": "compose-test"}))
		}
		cmd := exec.Command(dpsd, "--check-config", "--config", m[s.Command[1]])
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "configuration OK") {
			t.Errorf("dpsd node %s: dpsd --check-config --config %s: %v\n%s", name, s.Command[1], err, out)
		}
		storage, _ := os.ReadFile(m[s.Command[1]])
		if !strings.Contains(string(storage), "postgres://") || !strings.Contains(string(storage), "@postgres:5432/") {
			t.Errorf("dpsd node %s: its configuration does not use the postgres service", name)
		}
		// Nodes that share a dataDir volume share its generated
		// certificate: without serviceHostName (or a certificate of its
		// own) each covers its container's host name and rewrites it.
		var nodeCfg struct {
			ServiceHostName string `yaml:"serviceHostName"`
			TLS             struct {
				CertFile string `yaml:"certFile"`
			} `yaml:"tls"`
		}
		if err := yaml.Unmarshal(storage, &nodeCfg); err != nil {
			t.Errorf("dpsd node %s: %v", name, err)
		}
		_, ownHost := s.Environment["DPSD_SERVICEHOSTNAME"]
		if slices.Contains(s.Volumes, "dps-data:/data") && nodeCfg.ServiceHostName == "" && nodeCfg.TLS.CertFile == "" && !ownHost {
			t.Errorf("dpsd node %s shares dps-data's generated certificate but sets no serviceHostName nor tls.certFile: the nodes would rewrite it", name)
		}
	}
	slices.Sort(nodes)
	if !slices.Equal(nodes, []string{"node-a", "node-b"}) {
		t.Fatalf("services running %s: %v, want node-a and node-b", image[1], nodes)
	}

	lb := cf.Services["lb"]
	if !slices.Equal(lb.Ports, []string{"443:443", "8883:8883"}) {
		t.Errorf("lb publishes %v, want 443:443 and 8883:8883", lb.Ports)
	}
	cfgPath := mounts("lb", lb)["/usr/local/etc/haproxy/haproxy.cfg"]
	if cfgPath == "" {
		t.Fatal("lb mounts no haproxy.cfg")
	}
	haproxy, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	checkHAProxy(t, string(haproxy), nodes)
}

// checkHAProxy: TCP mode only (TLS passes through to dpsd), a frontend on
// 443 and on 8883, and every node behind each port, health-checked on the
// admin port's /readyz.
func checkHAProxy(t *testing.T, cfg string, nodes []string) {
	t.Helper()
	if !regexp.MustCompile(`(?m)^\s+mode tcp$`).MatchString(cfg) || strings.Contains(cfg, "mode http") {
		t.Error("haproxy.cfg: want mode tcp (TLS passthrough) and no mode http")
	}
	if strings.Contains(cfg, " ssl ") || strings.Contains(cfg, " crt ") {
		t.Error("haproxy.cfg terminates TLS: X.509 attestation needs dpsd to see the handshake")
	}
	for _, port := range []string{"443", "8883"} {
		if !regexp.MustCompile(`(?m)^\s+bind :` + port + `$`).MatchString(cfg) {
			t.Errorf("haproxy.cfg: no frontend binds :%s", port)
		}
		for _, n := range nodes {
			if !regexp.MustCompile(`(?m)^\s+server \S+ ` + regexp.QuoteMeta(n) + `:` + port + ` check port 9090\b`).MatchString(cfg) {
				t.Errorf("haproxy.cfg: no server %s:%s checked on port 9090", n, port)
			}
		}
	}
	if strings.Count(cfg, "http-check send meth GET uri /readyz") != 2 || strings.Count(cfg, "http-check expect status 200") != 2 {
		t.Error("haproxy.cfg: both backends must check GET /readyz for a 200")
	}
}

var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate fills in compose's ${VAR}, ${VAR:-default} and
// ${VAR:?message} from vars.
func interpolate(s string, vars map[string]string) string {
	return composeVar.ReplaceAllStringFunc(s, func(m string) string {
		sub := composeVar.FindStringSubmatch(m)
		if v := vars[sub[1]]; v != "" {
			return v
		}
		if strings.HasSuffix(sub[2], "-") {
			return sub[3]
		}
		return ""
	})
}

// TestSystemdUnit: deploy/systemd/dpsd.service is the unit docs/operations.md
// shows and installs, and systemd-analyze verify (where systemd is
// installed) has nothing to say about it.
func TestSystemdUnit(t *testing.T) {
	dir := root(t)
	unit, err := os.ReadFile(filepath.Join(dir, "deploy/systemd/dpsd.service"))
	if err != nil {
		t.Fatal(err)
	}
	ops, err := os.ReadFile(filepath.Join(dir, "docs/operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(ops), "\n## A systemd service\n")
	if !ok {
		t.Fatal(`docs/operations.md has no section "A systemd service"`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "```ini\n")
	block, _, _ = strings.Cut(block, "```")
	if !ok || block != string(unit) {
		t.Errorf("docs/operations.md's unit differs from deploy/systemd/dpsd.service:\n%s", block)
	}
	if !strings.Contains(section, "install -m 0644 deploy/systemd/dpsd.service /etc/systemd/system/dpsd.service") {
		t.Error("docs/operations.md does not install deploy/systemd/dpsd.service")
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: the unit is compared with the docs only")
		return
	}
	// verify checks that ExecStart's program exists: point it at a dpsd.
	bin := dpstest.BuildDPSD(t)
	path := filepath.Join(t.TempDir(), "dpsd.service")
	if err := os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/local/bin/dpsd"), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
