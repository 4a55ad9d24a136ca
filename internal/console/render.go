package console

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
)

// page is what every template gets.
type page struct {
	Title   string
	Section string // the navigation entry to mark current
	V       *viewer
	CSRF    string
	Flash   string
	Error   string
	IDScope string
	Data    any
}

// viewer is the signed-in user as templates ask about it.
type viewer struct {
	s    *session
	hubs []LinkedHub
}

// Can reports whether the user's DPS policy holds right.
func (v *viewer) Can(right string) bool { return v != nil && v.s.has("", access.Right(right)) }

// CanHub reports whether the user's policy of hub holds right.
func (v *viewer) CanHub(hub, right string) bool { return v != nil && v.s.has(hub, access.Right(right)) }

// Policy is the user's DPS policy name ("" when signed in to hubs only).
func (v *viewer) Policy() string {
	g, _ := v.s.grantFor("")
	return g.Policy
}

// Grants are the user's credentials, DPS first.
func (v *viewer) Grants() []grant { return v.s.grants }

// Hubs are the built-in hubs.
func (v *viewer) Hubs() []string {
	var out []string
	for _, l := range v.hubs {
		if l.BuiltIn {
			out = append(out, l.HostName)
		}
	}
	return out
}

func templateFuncs() template.FuncMap {
	return template.FuncMap{
		"pe": url.PathEscape,
		"qe": url.QueryEscape,
		"when": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"clock": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("15:04:05")
		},
		"pretty": prettyJSON,
		"body":   bodyText,
		"ms":     func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + " ms" },
		"join":   strings.Join,
		"add":    func(a, b int) int { return a + b },
		"dict": func(kv ...any) map[string]any {
			m := map[string]any{}
			for i := 0; i+1 < len(kv); i += 2 {
				m[fmt.Sprint(kv[i])] = kv[i+1]
			}
			return m
		},
		"lower": strings.ToLower,
		"attestation": func(t any) string {
			switch fmt.Sprint(t) {
			case string(dps.AttestationSymmetricKey):
				return "symmetric key"
			case string(dps.AttestationX509):
				return "X.509"
			case string(dps.AttestationTPM):
				return "TPM"
			case "":
				return "—"
			}
			return fmt.Sprint(t)
		},
		"list": func(xs ...string) []string { return xs },
		// reveal is the one way a template prints a key: dps.Key prints
		// as REDACTED, so a key reaches a page only where a template asks
		// for it, behind a reveal the user requested.
		"reveal": func(k dps.Key) string { return string(k) },
		"str":    func(v any) string { return fmt.Sprint(v) },
	}
}

// prettyJSON indents JSON for display ("" for none or null).
func prettyJSON(raw []byte) string {
	if t := bytes.TrimSpace(raw); len(t) == 0 || string(t) == "null" {
		return ""
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return string(raw)
	}
	return out.String()
}

// bodyText shows a message body as text when it is UTF-8, else as
// base64.
func bodyText(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return "base64:" + base64.StdEncoding.EncodeToString(b)
}

// parsePages parses every page template with the layout and the partials.
func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("").Funcs(templateFuncs()).ParseFS(assets, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return nil, err
	}
	files, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, f := range files {
		name := strings.TrimSuffix(path.Base(f), ".html")
		if name == "layout" || name == "partials" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(assets, f)
		if err != nil {
			return nil, err
		}
		pages[name] = t
	}
	return pages, nil
}

// render writes the page name with status.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, s *session, status int, name string, p page) {
	t, ok := h.pages[name]
	if !ok {
		h.o.Logger.Error("console: no template", "page", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if s != nil {
		p.V = &viewer{s: s, hubs: h.o.LinkedHubs}
		p.CSRF = s.csrf
		if p.Flash == "" {
			p.Flash = h.takeFlash(s)
		}
	}
	p.IDScope = h.o.IDScope
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		h.o.Logger.Error("console: template failed", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// fragment renders one named partial (a table row of a live stream).
func (h *Handler) fragment(name string, data any) (string, error) {
	var buf bytes.Buffer
	if err := h.pages["message"].ExecuteTemplate(&buf, name, data); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// renderStatus writes a message page (an error, a refusal).
func (h *Handler) renderStatus(w http.ResponseWriter, r *http.Request, s *session, status int, title, msg string) {
	h.render(w, r, s, status, "message", page{Title: title, Data: msg})
}
