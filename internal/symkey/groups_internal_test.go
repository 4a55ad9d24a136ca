package symkey

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"

	"github.com/opendps/dps/internal/sas"
)

// TestPreparedHMACMatchesSAS: the pre-keyed HMAC of the group scan computes
// exactly sas.DeriveKey and sas.Sign, for keys shorter than, equal to and
// longer than a SHA-256 block, also with one prepared key shared by many
// goroutines.
func TestPreparedHMACMatchesSAS(t *testing.T) {
	for _, n := range []int{16, 32, 63, 64, 65, 100} {
		key := make([]byte, n)
		rand.Read(key)
		k := newHMACKey(key)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				h := newHasher()
				for i := range 50 {
					id := fmt.Sprintf("device-%d-%d-%s", g, i, bytes.Repeat([]byte("x"), i))
					var dk, sig [sha256.Size]byte
					h.keyed(k, []byte(id), &dk)
					if want := sas.DeriveKey(key, id); !bytes.Equal(dk[:], want) {
						t.Errorf("key of %d bytes, ID %q: derived %x, want %x", n, id, dk, want)
						return
					}
					msg := "0ne0000TEST/registrations/" + id + "\n" + "1700000000"
					h.plain(&dk, []byte(msg), &sig)
					if want := sas.Sign(dk[:], "0ne0000TEST/registrations/"+id, "1700000000"); !bytes.Equal(sig[:], want) {
						t.Errorf("key of %d bytes, ID %q: signature %x, want %x", n, id, sig, want)
						return
					}
				}
			})
		}
		wg.Wait()
	}
}
