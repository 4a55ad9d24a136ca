package client

import (
	"context"
	"net/http"

	"github.com/opendps/dps/internal/faults"
)

// Faults lists the fault injection rules with their counts (a dps
// extension; ServiceConfig).
func (c *Client) Faults(ctx context.Context) ([]faults.Status, error) {
	return call[[]faults.Status](ctx, c, http.MethodGet, "/faults", nil, nil)
}

// PutFault adds or replaces the rule named r.Name.
func (c *Client) PutFault(ctx context.Context, r faults.Rule) (faults.Status, error) {
	return call[faults.Status](ctx, c, http.MethodPut, "/faults/"+seg(r.Name), nil, r)
}

// DeleteFault removes a rule and returns its last count.
func (c *Client) DeleteFault(ctx context.Context, name string) (faults.Status, error) {
	return call[faults.Status](ctx, c, http.MethodDelete, "/faults/"+seg(name), nil, nil)
}
