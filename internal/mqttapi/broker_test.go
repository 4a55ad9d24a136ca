package mqttapi_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/opendps/dps/internal/mqttapi"
	"github.com/opendps/dps/internal/pki"
)

func broker(t *testing.T, o mqttapi.BrokerOptions) (*mqttapi.Broker, *tls.Config) {
	t.Helper()
	files, err := pki.Ensure(t.TempDir(), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(files.ServerCert, files.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	o.Adapter = &mqttapi.Adapter{Registrar: &fakeRegistrar{}}
	b, err := mqttapi.Listen("127.0.0.1:0", o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	pem, _ := os.ReadFile(files.CACert)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return b, &tls.Config{RootCAs: pool}
}

// A device that asks for no keep-alive and then stays silent is
// disconnected after the idle timeout.
func TestIdleConnectionsAreClosed(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{IdleTimeout: 300 * time.Millisecond})
	lost := make(chan struct{})
	o := paho.NewClientOptions().AddBroker("tls://" + b.Addr().String()).SetClientID("dev-1").
		SetUsername("0ne00000001/registrations/dev-1/api-version=2019-03-31").SetPassword("sas").
		SetTLSConfig(tc).SetKeepAlive(0).SetAutoReconnect(false).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("an idle connection without keep-alive stayed open")
	}
}

// A client that opens TLS and never sends CONNECT is closed after the connect timeout.
func TestSilentClientsAreClosed(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{ConnectTimeout: 300 * time.Millisecond})
	conn, err := tls.Dial("tcp", b.Addr().String(), tc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1)
	start := time.Now()
	if _, err := conn.Read(buf); err == nil {
		t.Fatal("read data from a connection that sent no CONNECT")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %s, want about the connect timeout", d)
	}
}
