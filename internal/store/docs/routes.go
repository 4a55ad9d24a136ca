package docs

import "github.com/opendps/dps"

// RouteLeaseLost is the refusal of a checkpoint move by a node that no
// longer holds the route's lease (it expired, another node took it over):
// the node stops delivering the route.
func RouteLeaseLost(hub, route, node string) error {
	return dps.Errorf(dps.KindPrecondition, "node %q does not hold the lease of route %q of hub %q", node, route, hub)
}
