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

// HubAPIVersion is the api-version the client sends to a built-in hub.
const HubAPIVersion = "2021-04-12"

// HubEvents reads a built-in hub's event log (GET /messages/events, a dps
// extension). c is made from one of the hub's access policies
// (HostName=<hub>;SharedAccessKeyName=…;SharedAccessKey=…), one with
// ServiceConnect; the request names the hub by HostName whatever Endpoint
// it goes to. from is a sequence number, or "end" for only messages
// appended from now on ("" for the oldest kept); max 0 is the hub's
// default page; wait > 0 waits that long (the hub allows at most 50s) for
// a message when there is none yet.
func (c *Client) HubEvents(ctx context.Context, from string, max int, wait time.Duration) (wire.HubEvents, error) {
	return c.HubConsumerEvents(ctx, "", from, max, wait)
}

// HubConsumerEvents is HubEvents for a named consumer: without from, the
// read starts after the consumer's checkpoint (HubCheckpoint).
func (c *Client) HubConsumerEvents(ctx context.Context, consumer, from string, max int, wait time.Duration) (wire.HubEvents, error) {
	q := url.Values{"api-version": {HubAPIVersion}}
	if consumer != "" {
		q.Set("consumer", consumer)
	}
	if from != "" {
		q.Set("from", from)
	}
	if max > 0 {
		q.Set("max", strconv.Itoa(max))
	}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.Endpoint, "/")+"/messages/events?"+q.Encode(), nil)
	if err != nil {
		return wire.HubEvents{}, err
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
		return wire.HubEvents{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return wire.HubEvents{}, err
	}
	if resp.StatusCode != http.StatusOK {
		// IoT Hub's error shape: {"Message":"ErrorCode:<name>;<text>",…}.
		var body struct{ Message string }
		json.Unmarshal(data, &body)
		msg := body.Message
		if msg == "" {
			msg = strings.TrimSpace(string(data))
		}
		return wire.HubEvents{}, &Error{StatusCode: resp.StatusCode, Body: wire.ErrorBody{Message: msg}}
	}
	var out wire.HubEvents
	if err := json.Unmarshal(data, &out); err != nil {
		return wire.HubEvents{}, fmt.Errorf("client: decode the event log page: %w", err)
	}
	return out, nil
}

// HubCheckpoint stores a named consumer's checkpoint of the hub's event
// log: seq is the last sequence number it is done with.
func (c *Client) HubCheckpoint(ctx context.Context, consumer string, seq int64) error {
	_, _, err := c.HubCall(ctx, http.MethodPut, "/messages/events/checkpoints/"+url.PathEscape(consumer), nil, fmt.Appendf(nil, `{"sequenceNumber":%d}`, seq))
	return err
}
