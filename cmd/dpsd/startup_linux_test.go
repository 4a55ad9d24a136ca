package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/wire"
)

// setFileSizeLimit sets the RLIMIT_FSIZE of process pid (prlimit(2)): the
// kernel then refuses to grow any file past limit bytes (EFBIG), as a full
// disk refuses to grow it. Go ignores the SIGXFSZ that comes with it.
func setFileSizeLimit(t *testing.T, pid int, limit uint64) {
	t.Helper()
	lim := syscall.Rlimit{Cur: limit, Max: ^uint64(0)}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), uintptr(syscall.RLIMIT_FSIZE), uintptr(unsafe.Pointer(&lim)), 0, 0, 0); e != 0 {
		t.Fatalf("prlimit: %v", e)
	}
}

// TestFullDiskAnswers503: a dpsd whose database cannot grow (a file-size
// limit on the real process stands in for a full disk) answers the device
// API and the service API with 503, errorCode 503001, Retry-After and the
// DPS error body, not 500; /readyz says not ready although the database
// still answers reads. When there is room again it serves by itself.
func TestFullDiskAnswers503(t *testing.T) {
	bin := dpstest.BuildDPSD(t)
	dir := t.TempDir()
	// The wrapper records its PID, which exec hands over to dpsd.
	pidFile := filepath.Join(dir, "pid")
	wrapper := filepath.Join(dir, "dpsd.sh")
	if err := os.WriteFile(wrapper, []byte(fmt.Sprintf("#!/bin/sh\necho $$ > %q\nexec %q \"$@\"\n", pidFile, bin)), 0o700); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, "db", "dps.db")
	admin := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	p := dpstest.StartDPSD(t, wrapper, startupConfig(t, "sqlite:"+dbPath, admin))
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(p.CAFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 20 * time.Second}
	base := "https://" + p.HTTPS
	owner := func() string {
		return sas.New("localhost", mustB64(t, ownerKey), "provisioningserviceowner", time.Now().Add(time.Hour))
	}
	putEnrollment := func(id string) rawResponse {
		body, _ := json.Marshal(wire.IndividualEnrollment{RegistrationID: id, Attestation: symmetric()})
		return do(t, hc, http.MethodPut, base+"/enrollments/"+id+"?api-version=2021-10-01", owner(), body)
	}
	readyz := func() int {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	created := putEnrollment("full-dev")
	if created.status != 200 {
		t.Fatalf("create enrollment: %d %s", created.status, created.raw)
	}
	deviceKey := created.body["attestation"].(map[string]any)["symmetricKey"].(map[string]any)["primaryKey"].(string)
	register := func() rawResponse {
		tok := sas.New(startupScope+"/registrations/full-dev", mustB64(t, deviceKey), "registration", time.Now().Add(time.Hour))
		return do(t, hc, http.MethodPut, base+"/"+startupScope+"/registrations/full-dev/register?api-version=2021-10-01", tok, []byte(`{"registrationId":"full-dev"}`))
	}
	if got := readyz(); got != 200 {
		t.Fatalf("readyz before the disk is full = %d", got)
	}

	// The database and its WAL may grow by 64 KiB more, then no further.
	var largest int64
	for _, f := range []string{dbPath, dbPath + "-wal"} {
		if fi, err := os.Stat(f); err == nil {
			largest = max(largest, fi.Size())
		}
	}
	setFileSizeLimit(t, pid, uint64(largest+64<<10))
	var full rawResponse
	for i := range 2000 {
		if full = putEnrollment(fmt.Sprintf("fill-%04d", i)); full.status != 200 {
			break
		}
	}
	wantUnavailable := func(what string, r rawResponse) {
		t.Helper()
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Errorf("%s on a full disk: %d (Retry-After %q) %s, want 503 with Retry-After", what, r.status, r.header.Get("Retry-After"), r.raw)
			return
		}
		if r.body["errorCode"] != float64(503001) || r.body["trackingId"] == nil || r.body["message"] == "" || r.body["timestampUtc"] == nil {
			t.Errorf("%s on a full disk: body %s, want the DPS error shape with errorCode 503001", what, r.raw)
		}
	}
	wantUnavailable("service API PUT enrollment", full)
	wantUnavailable("device API register", register())
	if got := readyz(); got != http.StatusServiceUnavailable {
		t.Errorf("readyz on a full disk = %d, want 503", got)
	}
	// Reads still work: the disk is full, the database is not gone.
	if r := do(t, hc, http.MethodGet, base+"/enrollments/full-dev?api-version=2021-10-01", owner(), nil); r.status != 200 {
		t.Errorf("GET enrollment on a full disk = %d %s", r.status, r.raw)
	}

	// Room again: the same process serves, and becomes ready, by itself.
	setFileSizeLimit(t, pid, ^uint64(0))
	deadline := time.Now().Add(20 * time.Second)
	for readyz() != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("dpsd did not become ready once the disk had room")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := putEnrollment("after-full"); r.status != 200 {
		t.Fatalf("PUT enrollment once the disk had room = %d %s", r.status, r.raw)
	}
	dc := &device.Client{Endpoint: base, IDScope: startupScope, HTTPClient: hc, PollInterval: 50 * time.Millisecond}
	if res, err := dc.Register(context.Background(), "full-dev", device.SymmetricKey(deviceKey), nil); err != nil || res.Status != "assigned" {
		t.Fatalf("register after the disk had room = %+v, %v", res, err)
	}
}
