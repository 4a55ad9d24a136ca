package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	cmd := newRoot(&out, &out)
	cmd.SetArgs([]string{"version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.HasPrefix(s, "dpsctl ") || !strings.Contains(s, "go="+runtime.Version()) || !strings.Contains(s, "revision=") {
		t.Fatalf("dpsctl version printed %q", s)
	}
}
