package webhook_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	routehook "github.com/opendps/dps/internal/route/webhook"
	"github.com/opendps/dps/internal/routing"
	"github.com/opendps/dps/webhook"
)

var secret = []byte("s3cret")

func msgs() []dps.Message {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	return []dps.Message{
		{Hub: "h.example.net", DeviceID: "dev-1", Seq: 7, Enqueued: t0, MessageID: "m1", ContentType: "application/json",
			Properties: map[string]string{"a": "<&>"}, System: map[string]string{"iothub-connection-device-id": "dev-1"}, Body: []byte(`{"t":1}`)},
		{Hub: "h.example.net", DeviceID: "dev-2", ModuleID: "mod", Seq: 8, Enqueued: t0, Body: []byte{0, 1, 2}},
	}
}

type receiver struct {
	mu     sync.Mutex
	got    [][]routehook.Message
	status int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := webhook.Verify(secret, body, r.Header.Get(webhook.SignatureHeader), time.Minute, time.Now()); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var batch []routehook.Message
	if err := json.Unmarshal(body, &batch); err != nil || r.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.got = append(rc.got, batch)
	if rc.status != 0 {
		http.Error(w, "down for maintenance", rc.status)
	}
}

func pool(srv *httptest.Server) *tls.Config {
	p := x509.NewCertPool()
	p.AddCert(srv.Certificate())
	return &tls.Config{RootCAs: p}
}

func TestDeliverSignedBatch(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewTLSServer(rc)
	defer srv.Close()
	ep, err := routehook.New(routehook.Options{URL: srv.URL + "/events", Secret: secret, TLS: pool(srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	if err := ep.Deliver(context.Background(), msgs()); err != nil {
		t.Fatal(err)
	}
	want := []routehook.Message{routehook.Convert(msgs()[0]), routehook.Convert(msgs()[1])}
	if len(rc.got) != 1 || !reflect.DeepEqual(rc.got[0], want) {
		t.Errorf("received %#v\nwant %#v", rc.got, want)
	}
	// A refusal is an error naming the status and the answer.
	rc.status = http.StatusServiceUnavailable
	if err := ep.Deliver(context.Background(), msgs()[:1]); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "maintenance") {
		t.Errorf("a 503 answer: %v", err)
	}
	// A wrong secret is refused by the receiver.
	bad, _ := routehook.New(routehook.Options{URL: srv.URL, Secret: []byte("other"), TLS: pool(srv)})
	if err := bad.Deliver(context.Background(), msgs()); err == nil || !strings.Contains(err.Error(), "401") || routing.IsPermanent(err) {
		t.Errorf("wrong secret: %v; want a 401, retried as an outage", err)
	}
	// The server's certificate is not trusted without the CA.
	untrusted, _ := routehook.New(routehook.Options{URL: srv.URL, Secret: secret})
	if err := untrusted.Deliver(context.Background(), msgs()); err == nil {
		t.Error("delivered to a server whose certificate is not trusted")
	}
	if _, err := routehook.New(routehook.Options{URL: "ftp://x"}); err == nil {
		t.Error("an ftp URL was accepted")
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMutualTLS: with caFile and a client certificate from files the
// endpoint passes a server that requires one; without it, it does not.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dps-router"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	writePEM(t, filepath.Join(dir, "client.pem"), "CERTIFICATE", der)
	writePEM(t, filepath.Join(dir, "client.key"), "PRIVATE KEY", kder)
	clientCert, _ := x509.ParseCertificate(der)

	rc := &receiver{}
	srv := httptest.NewUnstartedServer(rc)
	clients := x509.NewCertPool()
	clients.AddCert(clientCert)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients}
	srv.StartTLS()
	defer srv.Close()
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", srv.Certificate().Raw)

	withCert, err := routehook.TLSConfig(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	ep, _ := routehook.New(routehook.Options{URL: srv.URL, Secret: secret, TLS: withCert})
	if err := ep.Deliver(context.Background(), msgs()); err != nil {
		t.Fatalf("with the client certificate: %v", err)
	}
	caOnly, err := routehook.TLSConfig(filepath.Join(dir, "ca.pem"), "", "")
	if err != nil {
		t.Fatal(err)
	}
	ep2, _ := routehook.New(routehook.Options{URL: srv.URL, Secret: secret, TLS: caOnly})
	if err := ep2.Deliver(context.Background(), msgs()); err == nil {
		t.Error("delivered without a client certificate to a server requiring one")
	}
	if _, err := routehook.TLSConfig("", filepath.Join(dir, "client.pem"), ""); err == nil {
		t.Error("a certificate without its key was accepted")
	}
}

// TestRefusalsArePermanent: 400, 413 and 422 say the webhook will never
// take the messages (routing finds which and dead-letters them); 401, 403,
// 404 and the other 4xx are about the endpoint (credentials, permissions,
// the URL), retried as an outage like 5xx, 408 and 429.
func TestRefusalsArePermanent(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewTLSServer(rc)
	defer srv.Close()
	ep, err := routehook.New(routehook.Options{URL: srv.URL, Secret: secret, TLS: pool(srv)})
	if err != nil {
		t.Fatal(err)
	}
	for status, permanent := range map[int]bool{400: true, 413: true, 422: true,
		401: false, 403: false, 404: false, 405: false, 410: false, 415: false, 408: false, 429: false, 500: false, 503: false} {
		rc.mu.Lock()
		rc.status = status
		rc.mu.Unlock()
		err := ep.Deliver(context.Background(), msgs())
		if err == nil || routing.IsPermanent(err) != permanent {
			t.Errorf("status %d: err %v, permanent %v; want permanent %v", status, err, routing.IsPermanent(err), permanent)
		}
	}
}
