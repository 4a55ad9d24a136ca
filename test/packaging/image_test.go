package packaging

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// imageConfig is the part of an image configuration (OCI's, and Docker's,
// which adds Healthcheck) the test checks.
type imageConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		User         string              `json:"User"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
		Volumes      map[string]struct{} `json:"Volumes"`
		Env          []string            `json:"Env"`
		Entrypoint   []string            `json:"Entrypoint"`
		WorkingDir   string              `json:"WorkingDir"`
		Healthcheck  *struct {
			Test []string `json:"Test"`
		} `json:"Healthcheck"`
	} `json:"config"`
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// TestImage builds the image with make image, extracts the file system of
// its OCI archive and runs dpsd and dpsctl from it, chrooted and as the
// image's user, with the image's environment: --version, a real start with
// /readyz answering 200, dpsd --healthcheck, a group and a device
// registered with dpsctl. It checks the image configuration: a non-root
// user, the ports, the volume, and (in the Docker archive) the health check.
func TestImage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: buildah builds as root here, and the test chroots into the image's file system")
	}
	if _, err := exec.LookPath("buildah"); err != nil {
		t.Skip("buildah is not installed: `make image-deps` (part of `make deps`, which `make test` runs) installs Debian's")
	}
	tmp := t.TempDir()
	dist := filepath.Join(tmp, "dist")
	runMake(t, "image", "DIST="+dist, "IMAGE=localhost/dpsd:test",
		"BUILDAH_STORAGE=--root "+filepath.Join(tmp, "storage")+" --runroot "+filepath.Join(tmp, "run")+" --storage-driver vfs")

	rootfs := filepath.Join(tmp, "rootfs")
	cfg := extractOCI(t, filepath.Join(dist, "dpsd-image.oci.tar"), rootfs)
	c := cfg.Config
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("image platform %s/%s, want linux/%s", cfg.OS, cfg.Architecture, runtime.GOARCH)
	}
	uid, gid := parseUser(t, c.User)
	if uid == 0 || gid == 0 {
		t.Errorf("image user %q: want a non-root numeric user and group", c.User)
	}
	for _, p := range []string{"443/tcp", "8883/tcp", "9090/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("image does not expose %s (exposes %v)", p, c.ExposedPorts)
		}
	}
	if _, ok := c.Volumes["/data"]; !ok || len(c.Volumes) != 1 {
		t.Errorf("image volumes %v, want /data", c.Volumes)
	}
	if !slices.Contains(c.Env, "DPSD_DATADIR=/data") || !slices.Contains(c.Env, "DPSD_LISTEN_ADMIN=:9090") {
		t.Errorf("image env %v: want DPSD_DATADIR=/data and DPSD_LISTEN_ADMIN=:9090", c.Env)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/dpsd"}) {
		t.Errorf("image entrypoint %v", c.Entrypoint)
	}
	// The OCI image format has no health check; the Docker archive keeps it.
	dcfg := dockerArchiveConfig(t, filepath.Join(dist, "dpsd-image.docker.tar"))
	if hc := dcfg.Config.Healthcheck; hc == nil || !slices.Equal(hc.Test, []string{"CMD", "/usr/local/bin/dpsd", "--healthcheck"}) {
		t.Errorf("docker archive health check %+v, want CMD /usr/local/bin/dpsd --healthcheck", hc)
	}
	if !slices.Equal(dcfg.RootFS.DiffIDs, cfg.RootFS.DiffIDs) || dcfg.Config.User != c.User {
		t.Errorf("the Docker archive (layers %v, user %q) differs from the OCI archive (%v, %q)", dcfg.RootFS.DiffIDs, dcfg.Config.User, cfg.RootFS.DiffIDs, c.User)
	}

	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[runtime.GOARCH]
	for _, b := range []string{"dpsd", "dpsctl"} {
		checkStatic(t, filepath.Join(rootfs, "usr/local/bin", b), machine)
	}
	if fi, err := os.Stat(filepath.Join(rootfs, "data")); err != nil || !fi.IsDir() || fi.Sys().(*syscall.Stat_t).Uid != uint32(uid) || fi.Mode().Perm() != 0o700 {
		t.Fatalf("/data in the image: %v, %v: want a directory of mode 0700 owned by uid %d", fi.Mode(), err, uid)
	}
	if t.Failed() {
		t.FailNow()
	}

	img := &chrooted{t: t, root: rootfs, uid: uid, gid: gid, dir: c.WorkingDir, env: c.Env}
	if out, err := img.run("/usr/local/bin/dpsd", "--version"); err != nil || !strings.HasPrefix(out, "dpsd ") || !strings.Contains(out, "go=go") {
		t.Fatalf("dpsd --version from the image: %q, %v", out, err)
	}
	if out, err := img.run("/usr/local/bin/dpsctl", "version"); err != nil || !strings.HasPrefix(out, "dpsctl ") {
		t.Fatalf("dpsctl version from the image: %q, %v", out, err)
	}

	// A real start: the image's entrypoint and environment, its dataDir
	// (the volume), loopback ports chosen by the kernel.
	d := img.start(c.Entrypoint, "DPSD_LISTEN_HTTPS=127.0.0.1:0", "DPSD_LISTEN_MQTT=127.0.0.1:0", "DPSD_LISTEN_ADMIN=127.0.0.1:0")
	resp, err := http.Get("http://" + d.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %s %s", resp.Status, body)
	}
	health := func() (string, error) {
		return img.run("/usr/local/bin/dpsd", "--healthcheck", "--env", "DPSD_LISTEN_ADMIN="+d.admin)
	}
	if out, err := health(); err != nil || !strings.HasPrefix(out, "ready") {
		t.Fatalf("dpsd --healthcheck: %q, %v", out, err)
	}
	for _, f := range []string{"data/dps.db", "data/tls/ca.pem", "data/tls/server-key.pem"} {
		fi, err := os.Stat(filepath.Join(rootfs, f))
		if err != nil || fi.Sys().(*syscall.Stat_t).Uid != uint32(uid) {
			t.Errorf("%s after start: %v (want it written by uid %d)", f, err, uid)
		}
	}

	key := make([]byte, 32)
	rand.Read(key)
	groupKey := base64.StdEncoding.EncodeToString(key)
	svc := []string{"--connection-string", d.connectionString, "--endpoint", "https://" + d.https, "--ca-file", d.caFile}
	if out, err := img.run("/usr/local/bin/dpsctl", append([]string{"group", "create", "image-line", "--primary-key", groupKey}, svc...)...); err != nil {
		t.Fatalf("dpsctl group create: %v\n%s", err, out)
	}
	out, err := img.run("/usr/local/bin/dpsctl", "register", "--endpoint", "https://"+d.https, "--ca-file", d.caFile,
		"--id-scope", d.scope, "--registration-id", "image-dev-1", "--group-key", groupKey, "--payload", `{"model":"t1"}`)
	if err != nil || !strings.Contains(out, `"status": "assigned"`) || !strings.Contains(out, `"assignedHub": "localhost"`) {
		t.Fatalf("dpsctl register: %v\n%s", err, out)
	}
	if out, err := img.run("/usr/local/bin/dpsctl", append([]string{"registration", "list", "image-line"}, svc...)...); err != nil || !strings.Contains(out, "image-dev-1") {
		t.Fatalf("dpsctl registration list: %v\n%s", err, out)
	}

	if err := d.stop(); err != nil {
		t.Fatalf("dpsd from the image did not stop cleanly: %v\n%s", err, d.logs())
	}
	if !strings.Contains(d.logs(), "dpsd stopped") {
		t.Errorf("no shutdown line in the log:\n%s", d.logs())
	}
	if out, err := health(); err == nil {
		t.Errorf("dpsd --healthcheck with dpsd stopped: %q, want a failure", out)
	}
}

func parseUser(t *testing.T, user string) (uid, gid int) {
	t.Helper()
	u, g, ok := strings.Cut(user, ":")
	var err1, err2 error
	uid, err1 = strconv.Atoi(u)
	gid, err2 = strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("image user %q: want numeric UID:GID (a scratch image has no /etc/passwd)", user)
	}
	return uid, gid
}

// readTar returns the regular files of a tar archive by name.
func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[strings.TrimPrefix(h.Name, "./")] = b
		}
	}
}

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// extractOCI reads an OCI archive (an image layout in a tar file), checks
// every blob against its digest, unpacks its layers in order into dir and
// returns the image configuration.
func extractOCI(t *testing.T, archive, dir string) imageConfig {
	t.Helper()
	files := readTar(t, archive)
	if !strings.Contains(string(files["oci-layout"]), `"imageLayoutVersion"`) {
		t.Fatalf("%s: no oci-layout file: not an OCI image layout", archive)
	}
	blob := func(d descriptor, mediaType string) []byte {
		t.Helper()
		if d.MediaType != mediaType {
			t.Fatalf("blob %s: media type %q, want %q", d.Digest, d.MediaType, mediaType)
		}
		hexDigest, ok := strings.CutPrefix(d.Digest, "sha256:")
		b, found := files["blobs/sha256/"+hexDigest]
		if !ok || !found {
			t.Fatalf("blob %s not in the archive", d.Digest)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hexDigest || int64(len(b)) != d.Size {
			t.Fatalf("blob %s: content does not match its digest or size", d.Digest)
		}
		return b
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v, %d manifests, want 1", err, len(index.Manifests))
	}
	var manifest struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(blob(index.Manifests[0], "application/vnd.oci.image.manifest.v1+json"), &manifest); err != nil {
		t.Fatal(err)
	}
	var cfg imageConfig
	if err := json.Unmarshal(blob(manifest.Config, "application/vnd.oci.image.config.v1+json"), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(manifest.Layers) != len(cfg.RootFS.DiffIDs) || len(manifest.Layers) == 0 {
		t.Fatalf("%d layers, %d diff IDs", len(manifest.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, l := range manifest.Layers {
		var r io.Reader
		switch l.MediaType {
		case "application/vnd.oci.image.layer.v1.tar+gzip":
			zr, err := gzip.NewReader(bytes.NewReader(blob(l, l.MediaType)))
			if err != nil {
				t.Fatal(err)
			}
			r = zr
		case "application/vnd.oci.image.layer.v1.tar":
			r = bytes.NewReader(blob(l, l.MediaType))
		default:
			t.Fatalf("layer %s: media type %q", l.Digest, l.MediaType)
		}
		h := sha256.New()
		if err := unpackLayer(io.TeeReader(r, h), dir); err != nil {
			t.Fatalf("layer %s: %v", l.Digest, err)
		}
		io.Copy(h, r) // the tar's trailing padding belongs to the diff ID too
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != cfg.RootFS.DiffIDs[i] {
			t.Fatalf("layer %d: uncompressed digest %s, config says %s", i, got, cfg.RootFS.DiffIDs[i])
		}
	}
	return cfg
}

// unpackLayer applies one layer (a tar stream) to dir, as a container
// engine does: owners and modes kept, whiteouts remove what lower layers
// put there.
func unpackLayer(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." {
			continue
		}
		if !filepath.IsLocal(name) {
			return fmt.Errorf("%q leaves the file system", h.Name)
		}
		target := filepath.Join(dir, name)
		base := filepath.Base(name)
		if base == ".wh..wh..opq" {
			entries, _ := os.ReadDir(filepath.Dir(target))
			for _, e := range entries {
				os.RemoveAll(filepath.Join(filepath.Dir(target), e.Name()))
			}
			continue
		}
		if gone, ok := strings.CutPrefix(base, ".wh."); ok {
			os.RemoveAll(filepath.Join(filepath.Dir(target), gone))
			continue
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, mode); err != nil {
				return err
			}
		case tar.TypeReg:
			os.RemoveAll(target)
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			os.RemoveAll(target)
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		case tar.TypeLink:
			link := filepath.Clean(strings.TrimPrefix(h.Linkname, "./"))
			if !filepath.IsLocal(link) {
				return fmt.Errorf("hard link %q leaves the file system", h.Linkname)
			}
			os.RemoveAll(target)
			if err := os.Link(filepath.Join(dir, link), target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected entry type %q", h.Name, h.Typeflag)
		}
		if err := os.Lchown(target, h.Uid, h.Gid); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeSymlink {
			if err := os.Chmod(target, mode); err != nil {
				return err
			}
		}
	}
}

// dockerArchiveConfig returns the image configuration of a Docker archive
// (docker save's format).
func dockerArchiveConfig(t *testing.T, archive string) imageConfig {
	t.Helper()
	files := readTar(t, archive)
	var m []struct {
		Config string `json:"Config"`
	}
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil || len(m) != 1 {
		t.Fatalf("%s: manifest.json: %v", archive, err)
	}
	var cfg imageConfig
	if err := json.Unmarshal(files[m[0].Config], &cfg); err != nil {
		t.Fatalf("%s: %s: %v", archive, m[0].Config, err)
	}
	return cfg
}

// chrooted runs programs inside an extracted image file system as a
// container engine would: chrooted, as the image's user, in its working
// directory, with its environment and nothing of the test's.
type chrooted struct {
	t        *testing.T
	root     string
	uid, gid int
	dir      string
	env      []string
}

func (c *chrooted) command(ctx context.Context, argv []string, extraEnv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Path = argv[0] // resolved inside the chroot, not on the host's PATH
	cmd.Env = append(slices.Clone(c.env), extraEnv...)
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: c.root, Credential: &syscall.Credential{Uid: uint32(c.uid), Gid: uint32(c.gid)}}
	return cmd
}

// run runs a program to completion (args after "--env" are environment
// variables added for it) and returns what it printed.
func (c *chrooted) run(prog string, args ...string) (string, error) {
	var env []string
	if i := slices.Index(args, "--env"); i >= 0 {
		args, env = args[:i], args[i+1:]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := c.command(ctx, append([]string{prog}, args...), env...).CombinedOutput()
	return string(out), err
}

// daemon is dpsd running from the image, with what its banner said.
type daemon struct {
	cmd                                           *exec.Cmd
	done                                          chan error
	mu                                            sync.Mutex
	stderr                                        bytes.Buffer
	https, admin, scope, connectionString, caFile string
	stopOnce                                      sync.Once
	stopErr                                       error
}

func (d *daemon) Write(b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.Write(b)
}

func (d *daemon) logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// stop ends dpsd with SIGTERM, as a container engine does, and returns
// its exit error.
func (d *daemon) stop() error {
	d.stopOnce.Do(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case d.stopErr = <-d.done:
		case <-time.After(30 * time.Second):
			d.cmd.Process.Kill()
			d.stopErr = errors.Join(errors.New("no exit 30 s after SIGTERM"), <-d.done)
		}
	})
	return d.stopErr
}

func (c *chrooted) start(argv []string, extraEnv ...string) *daemon {
	t := c.t
	d := &daemon{done: make(chan error, 1)}
	d.cmd = c.command(context.Background(), argv, extraEnv...)
	d.cmd.Stderr = d
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("dpsd log:\n%s", d.logs())
		}
	})
	banner := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "Linked hubs:") {
				banner <- b.String()
			}
		}
	}()
	var text string
	select {
	case text = <-banner:
	case err := <-d.done:
		t.Fatalf("dpsd from the image exited at start: %v\n%s", err, d.logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("dpsd from the image printed no banner within 60 s:\n%s", d.logs())
	}
	find := func(re string) string {
		if m := regexp.MustCompile(re).FindStringSubmatch(text); m != nil {
			return m[1]
		}
		t.Fatalf("banner lacks %s:\n%s", re, text)
		return ""
	}
	d.https = find(`\(HTTPS ([0-9.:\[\]]+)\)`)
	d.admin = find(`Admin:\s+http://(\S+)/healthz`)
	d.scope = find(`ID scope:\s+(\S+)`)
	d.connectionString = find(`Service connection:\s+(\S+)`)
	d.caFile = find(`CA certificate:\s+(\S+)`)
	return d
}
