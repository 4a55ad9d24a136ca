// Package routetest holds test helpers for the routing endpoint adapters:
// generated messages, TLS files on disk, free loopback ports and the
// at-least-once, in-order-per-device check.
package routetest

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/pki"
	"github.com/opendps/dps/internal/route"
)

// Hub is the hub name of the generated messages: it has a '.', which NATS
// subjects must escape.
const Hub = "hub.example.test"

// Gen generates messages in the order of a hub's event log.
type Gen struct {
	seq int64
	// BodySize is the size of each body; 0: a short text naming the
	// message.
	BodySize int
}

// Next returns n messages, round robin over devices, each with the next
// sequence number, system and application properties.
func (g *Gen) Next(n int, devices ...string) []dps.Message {
	out := make([]dps.Message, n)
	base := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	for i := range out {
		g.seq++
		d := devices[i%len(devices)]
		body := []byte(fmt.Sprintf(`{"device":%q,"seq":%d}`, d, g.seq))
		if g.BodySize > 0 {
			body = make([]byte, g.BodySize)
			copy(body, fmt.Sprintf("%d:", g.seq))
		}
		out[i] = dps.Message{
			Hub: Hub, DeviceID: d, Seq: g.seq,
			Enqueued:        base.Add(time.Duration(g.seq) * time.Millisecond),
			MessageID:       "mid-" + strconv.FormatInt(g.seq, 10),
			CorrelationID:   "cid",
			ContentType:     "application/json",
			ContentEncoding: "utf-8",
			Properties:      map[string]string{"alert": "high", "n": strconv.FormatInt(g.seq, 10)},
			System: map[string]string{
				route.HeaderDeviceID:                   d,
				"iothub-connection-auth-method":        `{"scope":"device","type":"sas","issuer":"iothub"}`,
				"iothub-connection-auth-generation-id": "638000000000000000",
			},
			Body: body,
		}
	}
	return out
}

// Got is one message as a consumer of an endpoint read it back.
type Got struct {
	DeviceID string
	EventID  string // dps-event-id
}

// CheckDelivered fails t unless every message of want arrived in got and,
// per device, the first arrival of each message comes after the first
// arrival of every earlier message of that device (duplicates allowed:
// a batch retried after a failure). It returns the number of duplicates.
func CheckDelivered(t testing.TB, want []dps.Message, got []Got) int {
	t.Helper()
	first := make(map[string]int, len(got)) // event id → first index in got
	dups := 0
	for i, g := range got {
		if _, ok := first[g.EventID]; ok {
			dups++
			continue
		}
		first[g.EventID] = i
	}
	last := map[string]int{} // device → index of the previous message's first arrival
	lastID := map[string]string{}
	for _, m := range want {
		id := route.EventID(m)
		i, ok := first[id]
		if !ok {
			t.Errorf("message %s of %s never arrived", id, m.DeviceID)
			continue
		}
		if prev, ok := last[m.DeviceID]; ok && i < prev {
			t.Errorf("device %s: %s arrived before %s", m.DeviceID, id, lastID[m.DeviceID])
		}
		last[m.DeviceID], lastID[m.DeviceID] = i, id
	}
	return dups
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TLSFiles are PEM files in a temporary directory: a CA, a server
// certificate for 127.0.0.1 and localhost, and a client certificate, all
// signed by the CA.
type TLSFiles struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// NewTLS writes the files of [TLSFiles].
func NewTLS(t testing.TB) TLSFiles {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	f, err := pki.Ensure(dir, []string{"127.0.0.1", "localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(f.CACert, f.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := pki.Issue(ca, pair.PrivateKey.(*ecdsa.PrivateKey), []string{"dps-client"}, now, time.Hour, x509.ExtKeyUsageClientAuth)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	out := TLSFiles{CA: f.CACert, ServerCert: f.ServerCert, ServerKey: f.ServerKey,
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client-key.pem")}
	if err := os.WriteFile(out.ClientCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out.ClientKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// ServerConfig is a TLS server configuration with the server certificate
// that requires a client certificate from the CA when mutual is true.
func (f TLSFiles) ServerConfig(t testing.TB, mutual bool) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if mutual {
		caPEM, err := os.ReadFile(f.CA)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return c
}

// ClientConfig is the client side: the CA, and the client certificate
// when mutual is true.
func (f TLSFiles) ClientConfig(t testing.TB, mutual bool) *tls.Config {
	t.Helper()
	files := route.TLSFiles{CAFile: f.CA}
	if mutual {
		files.CertFile, files.KeyFile = f.ClientCert, f.ClientKey
	}
	c, err := files.Config()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Devices returns n device ids, some with characters that topic and
// subject templates must escape.
func Devices(n int) []string {
	special := []string{"dev.dot", "dev+plus", "dev#hash", "dev*star", "dev>gt", "dev%pct", "dev space"}
	out := make([]string, n)
	for i := range out {
		if i < len(special) {
			out[i] = special[i]
		} else {
			out[i] = "dev-" + strings.Repeat("x", i%3) + strconv.Itoa(i)
		}
	}
	return out
}
