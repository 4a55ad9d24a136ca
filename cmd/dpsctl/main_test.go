package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestKeysDerive(t *testing.T) {
	var out bytes.Buffer
	cmd := newRoot(&out, &out)
	cmd.SetArgs([]string{"keys", "derive", "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==", "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out.String()), "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="; got != want {
		t.Errorf("derive = %q, want %q", got, want)
	}
}

func TestRegisterNeedsOneKey(t *testing.T) {
	var out bytes.Buffer
	cmd := newRoot(&out, &out)
	cmd.SetArgs([]string{"register", "--id-scope", "0ne00000001", "--registration-id", "d"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--key") {
		t.Fatalf("err = %v", err)
	}
}
