package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/wire"
)

// EventQuery selects events of the registration-events feed (GET
// /registrationEvents, a dps extension; a policy with ServiceConfig).
type EventQuery struct {
	After          int64  // only events with a greater seq
	Limit          int    // at most this many per page (0: the server's default)
	RegistrationID string // one device's
	Kind           string // accepted, refused, assigned, failed or webhook
	Group          string // one enrollment group's
	Since          string // at this time or later: RFC 3339, or a duration back from now (10m)
}

func (q EventQuery) values() url.Values {
	v := url.Values{"api-version": {APIVersion}}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.After > 0 {
		v.Set("after", strconv.FormatInt(q.After, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	set("registrationId", q.RegistrationID)
	set("kind", q.Kind)
	set("group", q.Group)
	set("since", q.Since)
	return v
}

// eventsRequest sends GET /registrationEvents with the headers hdr and
// returns the answer, or the service's error answer as an *Error.
func (c *Client) eventsRequest(ctx context.Context, q EventQuery, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.Endpoint, "/")+"/registrationEvents?"+q.values().Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", sas.New(c.HostName, c.Key, c.KeyName, time.Now().Add(time.Hour)))
	req.Header.Set("Accept", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		e := &Error{StatusCode: resp.StatusCode}
		json.Unmarshal(data, &e.Body)
		return nil, e
	}
	return resp, nil
}

// RegistrationEvents reads one page of the feed, oldest first; the next
// page is after the last event's Seq. An empty page: no more events.
func (c *Client) RegistrationEvents(ctx context.Context, q EventQuery) ([]wire.RegistrationEvent, error) {
	resp, err := c.eventsRequest(ctx, q, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out wire.RegistrationEvents
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("client: decode the registration events: %w", err)
	}
	return out.Events, nil
}

// ErrStreamEnded is returned by FollowRegistrationEvents when the server
// ended the stream (it is shutting down): follow again after the last
// event seen.
var ErrStreamEnded = errors.New("client: the event stream ended")

// FollowRegistrationEvents reads the feed as a stream of server-sent
// events from q on (q.After is sent as Last-Event-ID, as a reconnecting
// reader does), calling fn with each event as it comes, until ctx ends,
// fn fails, or the stream ends (ErrStreamEnded). The server sends the
// events kept first, then each new one.
func (c *Client) FollowRegistrationEvents(ctx context.Context, q EventQuery, fn func(wire.RegistrationEvent) error) error {
	hdr := map[string]string{"Accept": "text/event-stream"}
	if q.After > 0 {
		hdr["Last-Event-ID"] = strconv.FormatInt(q.After, 10)
		q.After = 0
	}
	hc := *c
	if hc.HTTP != nil && hc.HTTP.Timeout != 0 {
		h := *hc.HTTP
		h.Timeout = 0 // a stream lasts: ctx ends it
		hc.HTTP = &h
	}
	resp, err := hc.eventsRequest(ctx, q, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var data []byte
	var name string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != nil && name == "" {
				var e wire.RegistrationEvent
				if err := json.Unmarshal(data, &e); err != nil {
					return fmt.Errorf("client: decode a registration event: %w", err)
				}
				if err := fn(e); err != nil {
					return err
				}
			}
			data, name = nil, ""
		case strings.HasPrefix(line, ":"): // a comment: keep-alive
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")...)
		case strings.HasPrefix(line, "event:"):
			name = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return ErrStreamEnded
}
