package client

import (
	"context"
	"encoding/json"
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

// HubRoutes lists a built-in hub's message routes and their progress (GET
// /routes, a dps extension; c as for HubEvents).
func (c *Client) HubRoutes(ctx context.Context) (wire.HubRoutes, error) {
	var out wire.HubRoutes
	err := c.hubGet(ctx, "/routes", url.Values{}, &out)
	return out, err
}

// HubDeadLetters reads a page of a route's dead letters after sequence
// number after (GET /routes/{name}/deadletters); max 0 is the hub's
// default page.
func (c *Client) HubDeadLetters(ctx context.Context, route string, after int64, max int) (wire.HubDeadLetters, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if max > 0 {
		q.Set("max", strconv.Itoa(max))
	}
	var out wire.HubDeadLetters
	err := c.hubGet(ctx, "/routes/"+url.PathEscape(route)+"/deadletters", q, &out)
	return out, err
}

// hubGet GETs path of the hub's service API into out.
func (c *Client) hubGet(ctx context.Context, path string, q url.Values, out any) error {
	q.Set("api-version", HubAPIVersion)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.Endpoint, "/")+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Host = c.HostName
	req.Header.Set("Authorization", sas.New(c.HostName, c.Key, c.KeyName, time.Now().Add(time.Hour)))
	req.Header.Set("Accept", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var body struct{ Message string }
		json.Unmarshal(data, &body)
		msg := body.Message
		if msg == "" {
			msg = strings.TrimSpace(string(data))
		}
		return &Error{StatusCode: resp.StatusCode, Body: wire.ErrorBody{Message: msg}}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("client: decode %s: %w", path, err)
	}
	return nil
}
