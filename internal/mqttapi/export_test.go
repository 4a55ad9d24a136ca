package mqttapi

// What the tests of package mqttapi_test may see of the broker's insides.

// MaxConnections is the connection limit in force.
func (b *Broker) MaxConnections() int64 { return b.o.MaxConnections }

// MochiClient reports what the embedded broker holds for a client ID: the
// remote address of its client ("" for none), and whether its topic index
// has that client ID subscribed to the response filter.
func (b *Broker) MochiClient(id string) (remote string, subscribed bool) {
	if cl, ok := b.srv.Clients.Get(id); ok {
		remote = cl.Net.Remote
	}
	_, subscribed = b.srv.Topics.Subscribers(responsePrefix + "200/?$rid=1").Subscriptions[id]
	return remote, subscribed
}
