package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
	"go.yaml.in/yaml/v3"
)

// Config is dpsd's configuration file. Its YAML keys are a public contract.
type Config struct {
	IDScope           string         `yaml:"idScope"`
	DataDir           string         `yaml:"dataDir"`
	Storage           string         `yaml:"storage"`
	NodeID            string         `yaml:"nodeID"`
	OperationLease    time.Duration  `yaml:"operationLease"`
	Listen            ListenConfig   `yaml:"listen"`
	TLS               TLSConfig      `yaml:"tls"`
	ServiceHostName   string         `yaml:"serviceHostName"`
	Location          string         `yaml:"location"`
	RetryAfterSeconds int            `yaml:"retryAfterSeconds"`
	AllocationPolicy  string         `yaml:"allocationPolicy"`
	LinkedHubs        []HubConfig    `yaml:"linkedHubs"`
	Hub               BuiltInConfig  `yaml:"hub"`
	Routing           RoutingConfig  `yaml:"routing"`
	AccessPolicies    []PolicyConfig `yaml:"accessPolicies"`
	Webhook           WebhookConfig  `yaml:"webhook"`
	X509              X509Config     `yaml:"x509"`
	Log               LogConfig      `yaml:"log"`
	// Throttling and fault injection (throttle.go).
	Throttling ThrottlingConfig `yaml:"throttling"`
	Faults     FaultsConfig     `yaml:"faults"`
	// Connection limits and timeouts (limits.go).
	Limits LimitsConfig `yaml:"limits"`

	// HubRetryBudget is how long a registration retries a hub that fails
	// transiently (remotehubs.go; 0: 10 minutes).
	HubRetryBudget time.Duration `yaml:"hubRetryBudget"`
	// Manifest applies declarative enrollments at start (manifest.go).
	Manifest ManifestConfig `yaml:"manifest"`

	// getenv is the environment loadConfig read (the manifests' ${…}).
	getenv func(string) string
	// Console is the web console (console.go).
	Console ConsoleConfig `yaml:"console"`
	// The registration-events feed (regevents.go).
	Events EventsConfig `yaml:"events"`
	// Certificate issuance (CSR at registration).
	Issuance IssuanceConfig `yaml:"issuance"`
}

// IssuanceConfig configures certificate issuance.
type IssuanceConfig struct {
	// KeyEncryptionKey seals the issuing CAs' private keys in the store:
	// base64 of 32 bytes (AES-256-GCM). Without it no issuing CA can be
	// created, and dpsd refuses to start on a store that holds some. Set
	// it with DPSD_ISSUANCE_KEYENCRYPTIONKEY rather than in the file.
	KeyEncryptionKey string `yaml:"keyEncryptionKey"`
}

// keyEncryptionKey decodes issuance.keyEncryptionKey (nil when unset).
func (c IssuanceConfig) keyEncryptionKey() ([]byte, error) {
	if c.KeyEncryptionKey == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(c.KeyEncryptionKey))
	if err != nil || len(b) != 32 {
		return nil, errors.New("must be base64 of 32 bytes (for example: openssl rand -base64 32)")
	}
	return b, nil
}

// BuiltInConfig holds the settings every built-in hub shares.
type BuiltInConfig struct {
	// EventRetention is how long a hub's event log keeps a device-to-cloud
	// message (default 24h, as IoT Hub's built-in endpoint).
	EventRetention time.Duration `yaml:"eventRetention"`
	// EventRetentionMessages is how many of its newest messages a hub's
	// event log keeps at most (default 1000000).
	EventRetentionMessages int64 `yaml:"eventRetentionMessages"`
}

// X509Config configures X.509 device attestation.
type X509Config struct {
	// CRLFiles are certificate revocation lists (PEM or DER), checked for
	// every certificate of a group device's chain; re-read when they change.
	CRLFiles []string `yaml:"crlFiles"`
}

// WebhookConfig configures calls to custom allocation webhooks.
type WebhookConfig struct {
	// Timeout bounds one call (default 5s).
	Timeout time.Duration `yaml:"timeout"`
	// RetryBudget bounds all retries after 429/5xx answers (default 20s).
	RetryBudget time.Duration `yaml:"retryBudget"`
	// MaxConcurrency bounds the calls to one webhook URL at once (its
	// query ignored; default 128): a webhook that hangs holds at most this
	// many of the engine's workers.
	MaxConcurrency int `yaml:"maxConcurrency"`
	// AllowHTTP permits http:// webhook URLs on enrollments.
	AllowHTTP bool `yaml:"allowHTTP"`
	// CAFile is a PEM bundle trusted in addition to the system trust store.
	CAFile string `yaml:"caFile"`
	// ClientCertFile and ClientKeyFile give dps a client certificate (mTLS).
	ClientCertFile string `yaml:"clientCertFile"`
	ClientKeyFile  string `yaml:"clientKeyFile"`
	// SigningSecret, when set, signs every webhook request (X-Dps-Signature).
	SigningSecret string `yaml:"signingSecret"`
}

// ListenConfig holds listener addresses ("" disables a listener).
type ListenConfig struct {
	HTTPS string `yaml:"https"`
	MQTT  string `yaml:"mqtt"`
	Admin string `yaml:"admin"`
}

// TLSConfig names the server certificate; empty means generated in dataDir.
type TLSConfig struct {
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// HubConfig is one linked IoT hub. A hub without a connectionString is a
// built-in hub, served by dpsd itself.
type HubConfig struct {
	HostName              string `yaml:"hostName"`
	ConnectionString      string `yaml:"connectionString"`
	AllocationWeight      *int   `yaml:"allocationWeight"`
	ApplyAllocationPolicy *bool  `yaml:"applyAllocationPolicy"`
	Location              string `yaml:"location"`
	// AccessPolicies are a built-in hub's shared access policies, with IoT
	// Hub's rights. None: an iothubowner policy with every right and keys
	// generated once, kept in the store.
	AccessPolicies []PolicyConfig `yaml:"accessPolicies"`
	// Endpoints and Routes are a built-in hub's message routing (routes.go).
	Endpoints []EndpointConfig `yaml:"endpoints"`
	Routes    []RouteConfig    `yaml:"routes"`
	// CAFile, Timeout and Endpoint are a remote hub's (remotehubs.go):
	// the CA its certificate chains to (default: the system's), the
	// timeout of each request to it (default 30 s), and the host:port to
	// reach it at instead of hostName:443.
	CAFile   string        `yaml:"caFile"`
	Timeout  time.Duration `yaml:"timeout"`
	Endpoint string        `yaml:"endpoint"`
}

// BuiltIn reports whether dpsd serves the hub itself.
func (h HubConfig) BuiltIn() bool { return h.ConnectionString == "" }

// PolicyConfig is one shared access policy of the service API.
type PolicyConfig struct {
	Name         string   `yaml:"name"`
	PrimaryKey   string   `yaml:"primaryKey"`
	SecondaryKey string   `yaml:"secondaryKey"`
	Rights       []string `yaml:"rights"`
}

// LogConfig selects the log level (debug, info, warn, error) and format (text, json).
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// defaultConfig is what dpsd runs with when no file is given.
func defaultConfig() Config {
	return Config{
		DataDir:           "./dps-data",
		Listen:            ListenConfig{HTTPS: ":443", MQTT: ":8883", Admin: "127.0.0.1:9090"},
		RetryAfterSeconds: 2,
		OperationLease:    30 * time.Second,
		AllocationPolicy:  "hashed",
		Log:               LogConfig{Level: "info", Format: "text"},
		Webhook:           WebhookConfig{Timeout: 5 * time.Second, RetryBudget: 20 * time.Second, MaxConcurrency: 128},
		Hub:               BuiltInConfig{EventRetention: iothub.DefaultRetentionAge, EventRetentionMessages: iothub.DefaultRetentionMessages},
		Throttling:        defaultThrottling(),
		Limits:            defaultLimits(),
		Events:            defaultEvents(),
	}
}

// defaultHub is the built-in hub of an instance started without
// configuration: localhost reaches this machine without any DNS change.
const defaultHub = "localhost"

// hubRights are the rights of a built-in hub's access policies (IoT Hub's).
func hubRights() []string {
	return []string{"RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"}
}

var envRef = regexp.MustCompile(`\$\{(DPSD_[A-Za-z0-9_]+)\}`)

// loadConfig reads the file at path ("" for none), expands ${DPSD_…}
// references, applies DPSD_… overrides, fills defaults and validates.
func loadConfig(path string, getenv func(string) string) (Config, error) {
	cfg := defaultConfig()
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		var missing []string
		raw = envRef.ReplaceAllFunc(raw, func(m []byte) []byte {
			name := string(envRef.FindSubmatch(m)[1])
			v := getenv(name)
			if v == "" {
				missing = append(missing, name)
			}
			return []byte(v)
		})
		if len(missing) > 0 {
			return cfg, fmt.Errorf("config: environment variable(s) %s referenced in %s are not set", strings.Join(missing, ", "), path)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return cfg, fmt.Errorf("config %s: %s", path, nameKeys(raw, err))
		}
	}
	applyEnv(&cfg, getenv)
	cfg.getenv = getenv
	if cfg.Storage == "" {
		cfg.Storage = "sqlite:" + filepath.Join(cfg.DataDir, "dps.db")
	}
	if cfg.NodeID == "" {
		cfg.NodeID, _ = os.Hostname()
	}
	if len(cfg.LinkedHubs) == 0 {
		// A working instance needs a hub to assign devices to: a built-in
		// one, which devices on this machine reach.
		cfg.LinkedHubs = []HubConfig{{HostName: defaultHub}}
	}
	for i := range cfg.LinkedHubs {
		h := &cfg.LinkedHubs[i]
		if h.AllocationWeight == nil {
			w := 1
			h.AllocationWeight = &w
		}
		if h.ApplyAllocationPolicy == nil {
			t := true
			h.ApplyAllocationPolicy = &t
		}
	}
	return cfg, cfg.validate()
}

// applyEnv applies DPSD_… overrides. Secrets have their own variables so
// they need not be written into the file:
// DPSD_ACCESSPOLICIES_<NAME>_PRIMARYKEY / _SECONDARYKEY (NAME upper-cased)
// DPSD_LINKEDHUBS_<N>_CONNECTIONSTRING (N from 0) and
// DPSD_LINKEDHUBS_<N>_ACCESSPOLICIES_<NAME>_PRIMARYKEY / _SECONDARYKEY.
func applyEnv(c *Config, getenv func(string) string) {
	set := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	set("DPSD_IDSCOPE", &c.IDScope)
	set("DPSD_DATADIR", &c.DataDir)
	set("DPSD_STORAGE", &c.Storage)
	set("DPSD_NODEID", &c.NodeID)
	set("DPSD_LISTEN_HTTPS", &c.Listen.HTTPS)
	set("DPSD_LISTEN_MQTT", &c.Listen.MQTT)
	set("DPSD_LISTEN_ADMIN", &c.Listen.Admin)
	set("DPSD_TLS_CERTFILE", &c.TLS.CertFile)
	set("DPSD_TLS_KEYFILE", &c.TLS.KeyFile)
	set("DPSD_SERVICEHOSTNAME", &c.ServiceHostName)
	set("DPSD_LOCATION", &c.Location)
	set("DPSD_WEBHOOK_SIGNINGSECRET", &c.Webhook.SigningSecret)
	set("DPSD_ISSUANCE_KEYENCRYPTIONKEY", &c.Issuance.KeyEncryptionKey)
	applyThrottlingEnv(&c.Throttling, getenv)
	applyFaultsEnv(&c.Faults, getenv)
	applyLimitsEnv(&c.Limits, getenv)
	for i := range c.AccessPolicies {
		p := &c.AccessPolicies[i]
		n := strings.ToUpper(p.Name)
		set("DPSD_ACCESSPOLICIES_"+n+"_PRIMARYKEY", &p.PrimaryKey)
		set("DPSD_ACCESSPOLICIES_"+n+"_SECONDARYKEY", &p.SecondaryKey)
	}
	for i := range c.LinkedHubs {
		h := &c.LinkedHubs[i]
		set(fmt.Sprintf("DPSD_LINKEDHUBS_%d_CONNECTIONSTRING", i), &h.ConnectionString)
		for j := range h.AccessPolicies {
			p := &h.AccessPolicies[j]
			n := fmt.Sprintf("DPSD_LINKEDHUBS_%d_ACCESSPOLICIES_%s_", i, strings.ToUpper(p.Name))
			set(n+"PRIMARYKEY", &p.PrimaryKey)
			set(n+"SECONDARYKEY", &p.SecondaryKey)
		}
	}
	applyRouteEnv(c, getenv)
}

// serviceRights are the rights of the DPS service API's access policies.
func serviceRights() []string {
	return []string{"ServiceConfig", "EnrollmentRead", "EnrollmentWrite", "RegistrationStatusRead", "RegistrationStatusWrite"}
}

// validatePolicies checks shared access policies whose rights come from
// rights.
func validatePolicies(bad func(key, format string, args ...any), prefix string, policies []PolicyConfig, rights []string) {
	names := map[string]bool{}
	for i, p := range policies {
		key := fmt.Sprintf("%s[%d]", prefix, i)
		if p.Name == "" {
			bad(key+".name", "must not be empty")
		}
		if names[strings.ToLower(p.Name)] {
			bad(key+".name", "%q is defined twice", p.Name)
		}
		names[strings.ToLower(p.Name)] = true
		if !validKey(p.PrimaryKey) {
			bad(key+".primaryKey", "must be base64 of 16 to 64 bytes")
		}
		if p.SecondaryKey != "" && !validKey(p.SecondaryKey) {
			bad(key+".secondaryKey", "must be base64 of 16 to 64 bytes")
		}
		if len(p.Rights) == 0 {
			bad(key+".rights", "must list at least one right")
		}
		for _, r := range p.Rights {
			if !slices.Contains(rights, r) {
				bad(key+".rights", "%q: unknown right (%s)", r, strings.Join(rights, ", "))
			}
		}
	}
}

func (c Config) validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.IDScope != "" {
		if err := dps.ValidateIDScope(c.IDScope); err != nil {
			bad("idScope", "%q: must be \"0ne\" followed by 8 letters or digits", c.IDScope)
		}
	}
	if c.DataDir == "" {
		bad("dataDir", "must not be empty")
	}
	if _, err := c.Issuance.keyEncryptionKey(); err != nil {
		bad("issuance.keyEncryptionKey", "%v", err)
	}
	switch {
	case strings.HasPrefix(c.Storage, "sqlite:") && len(c.Storage) > len("sqlite:"):
	case strings.HasPrefix(c.Storage, "postgres://"), strings.HasPrefix(c.Storage, "postgresql://"):
	default:
		bad("storage", "%q: must be sqlite:PATH or a postgres:// URL", redactDSN(c.Storage))
	}
	for key, addr := range map[string]string{"listen.https": c.Listen.HTTPS, "listen.mqtt": c.Listen.MQTT, "listen.admin": c.Listen.Admin} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(key, "%q: must be host:port or :port", addr)
		}
	}
	if c.Listen.HTTPS == "" {
		bad("listen.https", "must not be empty")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "certFile and keyFile must be set together")
	}
	if c.ServiceHostName != "" && strings.ContainsAny(c.ServiceHostName, "/: ") && net.ParseIP(c.ServiceHostName) == nil {
		bad("serviceHostName", "%q: must be a DNS name or an IP address", c.ServiceHostName)
	}
	if c.OperationLease < time.Second || c.OperationLease > 10*time.Minute {
		bad("operationLease", "%s: must be between 1s and 10m", c.OperationLease)
	}
	if c.RetryAfterSeconds < 1 || c.RetryAfterSeconds > 300 {
		bad("retryAfterSeconds", "%d: must be between 1 and 300", c.RetryAfterSeconds)
	}
	if p, err := dps.ParseAllocationPolicy(c.AllocationPolicy); err != nil || p == dps.AllocationCustom {
		bad("allocationPolicy", "%q: must be hashed, static or geoLatency", c.AllocationPolicy)
	}
	seen := map[string]bool{}
	for i, h := range c.LinkedHubs {
		key := fmt.Sprintf("linkedHubs[%d]", i)
		if h.HostName == "" || strings.ContainsAny(h.HostName, "/: ") {
			bad(key+".hostName", "%q: must be a host name", h.HostName)
		}
		if seen[strings.ToLower(h.HostName)] {
			bad(key+".hostName", "%q is linked twice", h.HostName)
		}
		seen[strings.ToLower(h.HostName)] = true
		if w := *h.AllocationWeight; w < 1 || w > 1000 {
			bad(key+".allocationWeight", "%d: must be between 1 and 1000", w)
		}
		if !h.BuiltIn() && len(h.AccessPolicies) > 0 {
			bad(key+".accessPolicies", "only a built-in hub (no connectionString) has access policies here")
		}
		validatePolicies(bad, key+".accessPolicies", h.AccessPolicies, hubRights())
		validateRemoteHub(bad, key, h)
	}
	validateHubRetryBudget(bad, c.HubRetryBudget)
	validatePolicies(bad, "accessPolicies", c.AccessPolicies, serviceRights())
	c.Hub.validate(bad)
	c.validateRoutes(bad)
	c.Throttling.validate(bad)
	c.Limits.validate(bad)
	c.Faults.validate(bad)
	c.Manifest.validate(bad)
	c.Console.validate(bad)
	c.Events.validate(bad)
	if c.Webhook.Timeout <= 0 || c.Webhook.Timeout > 60*time.Second {
		bad("webhook.timeout", "%s: must be between 1ms and 60s", c.Webhook.Timeout)
	}
	if c.Webhook.RetryBudget < c.Webhook.Timeout || c.Webhook.RetryBudget > 55*time.Second {
		bad("webhook.retryBudget", "%s: must be at least webhook.timeout and at most 55s (devices wait about 60s)", c.Webhook.RetryBudget)
	}
	if c.Webhook.MaxConcurrency < 1 || c.Webhook.MaxConcurrency > 1024 {
		bad("webhook.maxConcurrency", "%d: must be between 1 and 1024", c.Webhook.MaxConcurrency)
	}
	if (c.Webhook.ClientCertFile == "") != (c.Webhook.ClientKeyFile == "") {
		bad("webhook", "clientCertFile and clientKeyFile must be set together")
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q: must be debug, info, warn or error", c.Log.Level)
	}
	switch strings.ToLower(c.Log.Format) {
	case "text", "json":
	default:
		bad("log.format", "%q: must be text or json", c.Log.Format)
	}
	return errors.Join(errs...)
}

func (h BuiltInConfig) validate(bad func(key, format string, args ...any)) {
	if h.EventRetention < time.Minute || h.EventRetention > 365*24*time.Hour {
		bad("hub.eventRetention", "%s: must be between 1m and 8760h (365 days)", h.EventRetention)
	}
	if h.EventRetentionMessages < 1 || h.EventRetentionMessages > 1_000_000_000 {
		bad("hub.eventRetentionMessages", "%d: must be between 1 and 1000000000", h.EventRetentionMessages)
	}
}

func validKey(k string) bool {
	b, err := base64.StdEncoding.DecodeString(k)
	return err == nil && len(b) >= 16 && len(b) <= 64
}

func (c Config) linkedHubs() []dps.LinkedHub {
	out := make([]dps.LinkedHub, len(c.LinkedHubs))
	for i, h := range c.LinkedHubs {
		out[i] = dps.LinkedHub{HostName: h.HostName, AllocationWeight: *h.AllocationWeight, ApplyAllocationPolicy: *h.ApplyAllocationPolicy, Location: h.Location}
	}
	return out
}

var lineRef = regexp.MustCompile(`line (\d+): `)

// nameKeys rewrites "line N: …" in a YAML error as "line N (key.path): …".
func nameKeys(raw []byte, err error) string {
	var root yaml.Node
	if yaml.Unmarshal(raw, &root) != nil {
		return err.Error()
	}
	keys := map[string]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				keys[strconv.Itoa(n.Content[i].Line)] = p
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(&root, "")
	return lineRef.ReplaceAllStringFunc(err.Error(), func(m string) string {
		n := lineRef.FindStringSubmatch(m)[1]
		if k, ok := keys[n]; ok {
			return "line " + n + " (" + k + "): "
		}
		return m
	})
}

// redactDSN hides the passwords in a database URL: the user information's
// and a password= query parameter's.
func redactDSN(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		if at := strings.LastIndex(s, "@"); at > i {
			if colon := strings.Index(s[i+3:at], ":"); colon >= 0 {
				s = s[:i+3+colon] + ":REDACTED" + s[at:]
			}
		}
	}
	return passwordParam.ReplaceAllString(s, "${1}REDACTED")
}

var passwordParam = regexp.MustCompile(`(?i)([?&]password=)[^&#]*`)

// dsnSecrets returns the passwords a database URL holds, as written and
// decoded.
func dsnSecrets(s string) []string {
	var out []string
	add := func(v string) {
		if v != "" {
			out = append(out, v)
			if esc := url.QueryEscape(v); esc != v {
				out = append(out, esc)
			}
		}
	}
	if i := strings.Index(s, "://"); i >= 0 {
		// The user information by hand: a URL with a bad password escape
		// does not parse, and its password must not be printed either.
		if at := strings.LastIndex(s, "@"); at > i {
			if _, pw, ok := strings.Cut(s[i+3:at], ":"); ok {
				add(pw)
				if dec, err := url.PathUnescape(pw); err == nil {
					add(dec)
				}
			}
		}
	}
	if u, err := url.Parse(s); err == nil {
		for _, pw := range u.Query()["password"] {
			add(pw)
		}
	}
	return out
}
