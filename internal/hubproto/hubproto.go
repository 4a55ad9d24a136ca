// Package hubproto parses and builds what the Azure IoT Hub device protocol
// puts on the wire: the MQTT CONNECT username, the topics a device
// publishes and subscribes to, the topics the hub publishes, property bags
// and device SAS tokens.
//
// Everything here is a pure function: no I/O, no state. Where the SDKs and
// Microsoft's documentation disagree, the package accepts what the SDKs
// send (the Node, C, embedded C, Python, C# and Java device SDKs). Device
// and module ids are raw on the wire (never percent-encoded) and
// case-sensitive; a request id ($rid) is kept byte for byte so that the
// response echoes it exactly.
package hubproto

import "errors"

// Errors returned by the parsers.
var (
	ErrUsername = errors.New("hubproto: malformed hub username")
	ErrClientID = errors.New("hubproto: client id does not match the username")
	ErrTopic    = errors.New("hubproto: not a topic a device may publish to")
	ErrFilter   = errors.New("hubproto: not a topic filter a device may subscribe to")
	ErrModule   = errors.New("hubproto: module identities are not supported")
)
