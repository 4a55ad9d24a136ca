package client

import (
	"context"
	"encoding/json"
	"net/http"
)

// ServiceCall sends one request to the service API with body as the JSON
// body (nil: none) and returns the answer's JSON body and headers as they
// came, for callers that keep objects in the service's own shapes (every
// member, known or not). path is absolute, without a query; hdr are extra
// request headers (If-Match, x-ms-continuation, …; "" values are not
// sent). A status of 300 or more is an *Error, its header returned too
// (Retry-After).
func (c *Client) ServiceCall(ctx context.Context, method, path string, hdr map[string]string, body json.RawMessage) (json.RawMessage, http.Header, error) {
	var in any
	if body != nil {
		in = body
	}
	var out json.RawMessage
	h, err := c.do(ctx, method, path, hdr, in, &out)
	return out, h, err
}
