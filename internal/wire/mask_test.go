package wire

import (
	"net/url"
	"strings"
	"testing"
)

func TestMaskURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"https://fn.example.net/api/HttpTrigger1?code=s3cr3t==", "https://fn.example.net/api/HttpTrigger1?****"},
		{"https://fn.example.net/api/x?code=a&clientId=default", "https://fn.example.net/api/x?****"},
		{"https://user:pa55@hook.example.net/allocate", "https://hook.example.net/allocate?****"},
		{"https://hook.example.net/allocate?k=v#frag", "https://hook.example.net/allocate?****"},
		{"https://hook.example.net/allocate", "https://hook.example.net/allocate"},
		{"http://127.0.0.1:8080/allocate", "http://127.0.0.1:8080/allocate"},
		{"", ""},
		{"https://h\x7f/?code=x", "****"}, // does not parse: hidden whole
	} {
		if got := MaskURL(tt.in); got != tt.want {
			t.Errorf("MaskURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	c := &CustomAllocationDefinition{WebhookURL: "https://fn.example.net/api/x?code=k", APIVersion: "2021-10-01"}
	m := MaskCustomAllocation(c)
	if m.WebhookURL != "https://fn.example.net/api/x?****" || m.APIVersion != "2021-10-01" || c.WebhookURL != "https://fn.example.net/api/x?code=k" {
		t.Errorf("MaskCustomAllocation = %+v (input now %+v)", m, c)
	}
	if MaskCustomAllocation(nil) != nil {
		t.Error("MaskCustomAllocation(nil) != nil")
	}
}

// FuzzMaskURL: whatever the URL, the masked one carries no query but the
// mask and no user information (or is hidden whole), and masking is
// idempotent.
func FuzzMaskURL(f *testing.F) {
	for _, s := range []string{"https://fn.example.net/api/x?code=abc", "https://u:p@h/p", "https://h/p", "%zz", "https://h/p?#x", "//u@h?q"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := MaskURL(s)
		if again := MaskURL(out); again != out {
			t.Fatalf("MaskURL(%q) = %q, but MaskURL of that = %q", s, out, again)
		}
		in, err := url.Parse(s)
		if err != nil {
			if out != "****" {
				t.Fatalf("unparsable %q masked as %q", s, out)
			}
			return
		}
		if in.RawQuery == "" && in.User == nil {
			if out != s {
				t.Fatalf("MaskURL(%q) = %q, want it unchanged", s, out)
			}
			return
		}
		if out == "****" { // hidden whole
			return
		}
		u, err := url.Parse(out)
		if err != nil {
			t.Fatalf("MaskURL(%q) = %q, which does not parse: %v", s, out, err)
		}
		if u.User != nil || u.RawQuery != "****" || !strings.HasSuffix(out, "?****") {
			t.Fatalf("MaskURL(%q) = %q still carries user %v or query %q", s, out, u.User, u.RawQuery)
		}
	})
}
