package client

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/wire"
)

// HubCall sends one request to a built-in hub's service API (the IoT Hub
// REST API: /devices…, /twins…, /statistics…) and returns the answer's
// body. path is absolute and may carry a query; the api-version is added.
// c is made from one of the hub's access policies, as for HubEvents; hdr
// are extra request headers (If-Match, iothub-app-…). A status of 300 or
// more is an *Error with the IoT Hub error's Message.
func (c *Client) HubCall(ctx context.Context, method, path string, hdr map[string]string, body []byte) ([]byte, http.Header, error) {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.Endpoint, "/")+path+sep+"api-version="+HubAPIVersion, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Host = c.HostName
	req.Header.Set("Authorization", sas.New(c.HostName, c.Key, c.KeyName, time.Now().Add(time.Hour)))
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode >= 300 {
		// IoT Hub's error shapes: {"Message":"ErrorCode:<name>;<text>",…}
		// or, from direct methods, {"errorCode":…,"message":…}.
		// (encoding/json matches the member name in either case).
		var e struct{ Message string }
		json.Unmarshal(data, &e)
		msg := e.Message
		if msg == "" {
			msg = strings.TrimSpace(string(data))
		}
		return nil, resp.Header, &Error{StatusCode: resp.StatusCode, Body: wire.ErrorBody{Message: msg}}
	}
	return data, resp.Header, nil
}
