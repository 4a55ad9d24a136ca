package wire

import (
	"go/scanner"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/opendps/dps"
)

// TestCatalogAgreesWithKinds: every named DPS code starts with its Kind's
// status, appears once, and every Kind's default code is in the catalog
// under that Kind.
func TestCatalogAgreesWithKinds(t *testing.T) {
	seen := map[int]bool{}
	for _, c := range dps.Codes() {
		if c.Code < 100000 || c.Code > 999999 {
			t.Errorf("code %d (%v) is not six digits", c.Code, c.Kind)
		}
		if c.Code/1000 != Status(c.Kind) {
			t.Errorf("code %d is %v, whose status is %d", c.Code, c.Kind, Status(c.Kind))
		}
		if seen[c.Code] {
			t.Errorf("code %d is in the catalog twice", c.Code)
		}
		seen[c.Code] = true
	}
	for _, k := range dps.Kinds() {
		if got, ok := dps.KindOfCode(Code(k)); !ok || got != k {
			t.Errorf("%v: default code %d is in the catalog as %v (%v), want %v", k, Code(k), got, ok, k)
		}
	}
}

func TestKindOf(t *testing.T) {
	for _, tt := range []struct {
		status, code int
		want         dps.Kind
	}{
		{404, dps.CodeGroupNotFound, dps.KindNotFound},
		{400, dps.CodeCustomAllocationFailed, dps.KindInvalid},
		{503, dps.CodeHubUnavailable, dps.KindUnavailable},
		{405, dps.CodeMethodNotAllowed, dps.KindMethodNotAllowed},
		{401, 401999, dps.KindUnauthorized}, // a code dps does not define: by status
		{412, 0, dps.KindPrecondition},      // no body
		{500, dps.CodeNotFound, dps.KindInternal},
		{418, 418001, dps.KindInternal},
	} {
		if got := KindOf(tt.status, tt.code); got != tt.want {
			t.Errorf("KindOf(%d, %d) = %v, want %v", tt.status, tt.code, got, tt.want)
		}
	}
	for _, k := range dps.Kinds() {
		if got := KindOf(Status(k), Code(k)); got != k {
			t.Errorf("KindOf of %v's own status and code = %v", k, got)
		}
	}
}

// TestNoLiteralCodes: DPS error codes are written by their catalog names
// (dps.Code*), never as literals, outside the catalog and tests: no integer
// literal from 400000 to 599999 appears anywhere else.
func TestNoLiteralCodes(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	codes := map[int]bool{}
	for _, c := range dps.Codes() {
		codes[c.Code] = true
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") || rel == "codes.go" {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fset := token.NewFileSet()
		var s scanner.Scanner
		s.Init(fset.AddFile(rel, -1, len(src)), src, nil, 0)
		for {
			pos, tok, lit := s.Scan()
			if tok == token.EOF {
				break
			}
			if tok != token.INT {
				continue
			}
			// Any six-digit number of the 4xx/5xx families looks like a DPS
			// code: one that is not in the catalog must be added to it.
			if n, err := strconv.Atoi(lit); err == nil && (codes[n] || n >= 400000 && n <= 599999) {
				t.Errorf("%s: literal DPS code %s; use (or add) its dps.Code* name", fset.Position(pos), lit)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
