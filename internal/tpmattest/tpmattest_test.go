package tpmattest_test

import (
	"testing"

	"github.com/opendps/dps/internal/tpmattest"
)

func FuzzParts(f *testing.F) {
	f.Add([]byte{0, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := tpmattest.Parts(b)
		if err != nil {
			return
		}
		n := 0
		for _, x := range p {
			n += 2 + len(x)
		}
		if n != len(b) {
			t.Fatalf("parts cover %d of %d bytes", n, len(b))
		}
	})
}

func FuzzParsePublic(f *testing.F) {
	f.Add([]byte{0, 4, 0, 1, 0, 11})
	f.Fuzz(func(t *testing.T, b []byte) {
		tpmattest.ParsePublic(b) // must not panic
	})
}
