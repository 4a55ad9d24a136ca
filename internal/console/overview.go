package console

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
)

// countCap bounds what the overview counts (more shows as "N+").
const countCap = 10_000

type count struct {
	N    int
	More bool // at least N
}

func (c count) String() string {
	if c.More {
		return fmt.Sprintf("%d+", c.N)
	}
	return fmt.Sprint(c.N)
}

// countPages counts the items of a paged list, up to countCap.
func countPages(read func(cont string) (int, string, error)) (count, error) {
	var c count
	cont := ""
	for {
		n, next, err := read(cont)
		if err != nil {
			return c, err
		}
		c.N += n
		if next == "" {
			return c, nil
		}
		if c.N >= countCap {
			c.More = true
			return c, nil
		}
		cont = next
	}
}

// minute is one bar of the registrations-per-minute chart.
type minute struct {
	Start            time.Time
	Assigned, Failed int // failed: refusals and failed operations
	// X, H and Y place the bar in the chart's SVG (assigned on top of
	// failed).
	X, HA, YA, HF, YF int
}

type refusal struct {
	Code   int
	Reason string
	N      int
}

type hubRow struct {
	Name      string
	BuiltIn   bool
	Allowed   bool // the user may read its registry
	Total     int
	Enabled   int
	Disabled  int
	Connected int
	Err       string
}

type overviewData struct {
	Enrollments, Groups *count
	Health              string // "" healthy; else why not
	HealthShown         bool
	FeedOff             bool
	FeedShown           bool
	Minutes             []minute
	MaxPerMinute        int
	Assigned, Failed    int
	Refusals            []refusal
	Hubs                []hubRow
}

// chart geometry: 60 bars of barWidth in a chartHeight-high SVG.
const (
	chartHeight = 120
	barWidth    = 10
)

func (h *Handler) overview(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	d := overviewData{FeedOff: h.o.Events == nil}
	if h.o.Health != nil {
		d.HealthShown = true
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := h.o.Health(hctx); err != nil {
			h.o.Logger.WarnContext(ctx, "console: health check failed", "err", err)
			d.Health = "The store does not answer or does not take writes."
		}
		cancel()
	}
	if s.has("", access.EnrollmentRead) {
		e, err := countPages(func(c string) (int, string, error) {
			es, next, err := h.o.Manager.Enrollments(ctx, c, 1000)
			return len(es), next, err
		})
		if err != nil {
			h.fail(w, r, s, err)
			return
		}
		g, err := countPages(func(c string) (int, string, error) {
			gs, next, err := h.o.Manager.Groups(ctx, c, 1000)
			return len(gs), next, err
		})
		if err != nil {
			h.fail(w, r, s, err)
			return
		}
		d.Enrollments, d.Groups = &e, &g
	}
	if s.has("", access.ServiceConfig) && h.o.Events != nil {
		d.FeedShown = true
		if err := h.feedFigures(ctx, &d); err != nil {
			h.o.Logger.WarnContext(ctx, "console: feed figures unavailable", "err", err)
		}
	}
	for _, l := range h.o.LinkedHubs {
		row := hubRow{Name: l.HostName, BuiltIn: l.BuiltIn && h.o.Hub != nil}
		if row.BuiltIn && s.has(l.HostName, access.RegistryRead) {
			row.Allowed = true
			st, err := h.o.Hub.Statistics(ctx, l.HostName)
			if err != nil {
				_, row.Err = h.errorStatus(r, err)
			}
			row.Total, row.Enabled, row.Disabled = st.Total, st.Enabled, st.Disabled
			row.Connected = h.o.Hub.ConnectedDevices(l.HostName)
		}
		d.Hubs = append(d.Hubs, row)
	}
	h.render(w, r, s, http.StatusOK, "overview", page{Title: "Overview", Section: "overview", Data: d})
}

// feedFigures counts the last hour's registrations per minute and its
// refusals by reason from the feed, reading it newest first (at most 20
// pages of 500: in a busier hour, the latest 10000 events).
func (h *Handler) feedFigures(ctx context.Context, d *overviewData) error {
	now := h.o.Now().UTC()
	start := now.Truncate(time.Minute).Add(-59 * time.Minute)
	d.Minutes = make([]minute, 60)
	for i := range d.Minutes {
		d.Minutes[i].Start = start.Add(time.Duration(i) * time.Minute)
	}
	byReason := map[string]*refusal{}
	var before int64 // newest first: a busy hour counts its latest 10000 events
	for range 20 {
		evs, err := h.o.Events.Latest(ctx, before, 500, EventFilter{Since: start})
		if err != nil {
			return err
		}
		for _, e := range evs {
			before = e.Seq
			i := int(e.Time.Sub(start) / time.Minute)
			if i < 0 || i >= 60 {
				continue
			}
			switch e.Kind {
			case dps.EventAssigned:
				d.Minutes[i].Assigned++
				d.Assigned++
			case dps.EventRefused, dps.EventFailed:
				d.Minutes[i].Failed++
				d.Failed++
				key := fmt.Sprint(e.Code) + "\x00" + e.Reason
				if byReason[key] == nil {
					byReason[key] = &refusal{Code: e.Code, Reason: e.Reason}
				}
				byReason[key].N++
			}
		}
		if len(evs) < 500 {
			break
		}
	}
	for _, m := range d.Minutes {
		d.MaxPerMinute = max(d.MaxPerMinute, m.Assigned+m.Failed)
	}
	scale := max(d.MaxPerMinute, 1)
	for i := range d.Minutes {
		m := &d.Minutes[i]
		m.X = i * barWidth
		m.HA = m.Assigned * chartHeight / scale
		m.HF = m.Failed * chartHeight / scale
		m.YF = chartHeight - m.HF
		m.YA = m.YF - m.HA
	}
	for _, r := range byReason {
		d.Refusals = append(d.Refusals, *r)
	}
	slices.SortFunc(d.Refusals, func(a, b refusal) int {
		if a.N != b.N {
			return b.N - a.N
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	return nil
}
