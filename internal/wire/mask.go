package wire

import "net/url"

// MaskURL hides what a webhook URL may carry as a secret — its query (an
// Azure Functions key travels in ?code=) and any user:password — the way
// Azure shows it in the requests it sends: "https://fn.example.net/api/x?****".
// A URL without either is returned as it is; one that does not parse, or
// has something to hide but no host (never a valid webhook URL), is hidden
// whole.
func MaskURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "****"
	}
	if u.User == nil && (u.RawQuery == "" || u.RawQuery == "****") { // nothing to hide, or masked already
		return s
	}
	if u.Scheme == "" || u.Host == "" || u.Opaque != "" {
		return "****"
	}
	masked := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return masked.String() + "?****"
}

// MaskCustomAllocation returns c with its webhook URL masked (MaskURL), for
// anyone who may not see the function key: webhook requests, and service
// API readers without EnrollmentWrite. c itself is not modified.
func MaskCustomAllocation(c *CustomAllocationDefinition) *CustomAllocationDefinition {
	if c == nil {
		return nil
	}
	out := *c
	out.WebhookURL = MaskURL(c.WebhookURL)
	return &out
}
