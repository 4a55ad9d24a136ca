package wsstream_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/opendps/dps/internal/wsstream"
)

// The stream ignores message boundaries: a packet split over messages and
// several packets in one message read the same; a text message ends it.
func TestStreamAcrossMessages(t *testing.T) {
	msgs := []string{"MQ", "TT-pack", "", "et|next"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := wsstream.New(ws)
		defer c.Close()
		for _, m := range msgs {
			if _, err := c.Write([]byte(m)); err != nil {
				t.Error(err)
				return
			}
		}
		ws.WriteMessage(websocket.TextMessage, []byte("not mqtt"))
		io.Copy(io.Discard, c) // until the client closes
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := wsstream.New(ws)
	defer c.Close()
	want := strings.Join(msgs, "")
	got := make([]byte, len(want))
	for i := range got { // one byte at a time: reads never cross into the wrong message
		if _, err := io.ReadFull(c, got[i:i+1]); err != nil {
			t.Fatalf("byte %d: %v", i, err)
		}
	}
	if string(got) != want {
		t.Errorf("stream = %q, want %q", got, want)
	}
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, wsstream.ErrNotBinary) {
		t.Errorf("text message: err = %v, want ErrNotBinary", err)
	}
}

// A peer that stops reading makes Write fail after WriteTimeout instead of
// blocking it until TCP gives up: the WebSocket library replaces deadlines
// set on the network connection with its own for every frame.
func TestWriteTimeout(t *testing.T) {
	result := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := wsstream.New(ws)
		c.WriteTimeout = 200 * time.Millisecond
		defer c.Close()
		big := make([]byte, 1<<20)
		for {
			if _, err := c.Write(big); err != nil {
				result <- err
				return
			}
		}
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close() // never read
	select {
	case err := <-result:
		if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
			t.Errorf("Write failed with %v, want a deadline error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Write to a peer that does not read still blocks after 10 s")
	}
}
