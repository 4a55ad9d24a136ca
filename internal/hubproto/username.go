package hubproto

import (
	"fmt"
	"strings"
)

// Username is a parsed MQTT CONNECT username of a hub device.
type Username struct {
	// Host is the hub host name as sent; the caller compares it with its
	// hubs case-insensitively.
	Host string
	// DeviceID is the device id, raw as sent (the SDKs never encode it).
	DeviceID string
	// ModuleID is set when a module connects ({host}/{deviceId}/{moduleId}/?…);
	// the caller may refuse it.
	ModuleID string
	// RawQuery is everything after the '?' (or, in the old C SDK form,
	// after the device id's '/'), as sent.
	RawQuery string
	// Params are the members of RawQuery, decoded, in order.
	Params []Property
	// APIVersion, ClientType (DeviceClientType) and ModelID (model-id) are
	// the decoded values of those members; "" when absent.
	APIVersion string
	ClientType string
	ModelID    string
}

// ParseUsername parses a hub username:
//
//	{host}/{deviceId}/?api-version=…&DeviceClientType=…&model-id=…
//	{host}/{deviceId}/{moduleId}/?api-version=…
//	{host}/{deviceId}/api-version=…&DeviceClientType=…   (C SDK, 2016: no '?')
//
// Ids are raw (Node sends a model-id such as dtmi:com:x:T;1 unencoded too),
// so only the part before the query is split on '/'. Members after '?' may
// come in any order, and any api-version (or none) is accepted. The first
// segment after the host is always the device id, whatever it contains (a
// device id may contain '?'). A username that cannot be told apart from
// another form is parsed as a device; CheckClientID then refuses it.
func ParseUsername(username string) (Username, error) {
	host, rest, ok := strings.Cut(username, "/")
	if !ok || host == "" {
		return Username{}, fmt.Errorf("%w: no host", ErrUsername)
	}
	if strings.ContainsRune(host, '?') {
		return Username{}, fmt.Errorf("%w: '?' in the host", ErrUsername)
	}
	device, rest, _ := strings.Cut(rest, "/")
	if device == "" {
		return Username{}, fmt.Errorf("%w: empty device id", ErrUsername)
	}
	u := Username{Host: host, DeviceID: device}
	switch {
	case rest == "":
		// {host}/{deviceId} or {host}/{deviceId}/: no parameters.
	case rest[0] == '?':
		u.RawQuery = rest[1:]
	default:
		module, after, slash := strings.Cut(rest, "/")
		if !slash || after != "" && after[0] != '?' {
			u.RawQuery = rest // the C SDK's old form without '?'
			break
		}
		if module == "" {
			return Username{}, fmt.Errorf("%w: empty module id", ErrUsername)
		}
		u.ModuleID = module
		if after != "" {
			u.RawQuery = after[1:]
		}
	}
	u.Params = DecodeBag(u.RawQuery)
	var haveAPI, haveType, haveModel bool
	for _, p := range u.Params {
		switch {
		case !haveAPI && strings.EqualFold(p.Key, "api-version"):
			u.APIVersion, haveAPI = p.Value, true
		case !haveType && strings.EqualFold(p.Key, "DeviceClientType"):
			u.ClientType, haveType = p.Value, true
		case !haveModel && strings.EqualFold(p.Key, "model-id"):
			u.ModelID, haveModel = p.Value, true
		}
	}
	return u, nil
}

// ClientID is the MQTT ClientId that goes with u: the device id, or
// deviceId/moduleId for a module.
func (u Username) ClientID() string {
	if u.ModuleID != "" {
		return u.DeviceID + "/" + u.ModuleID
	}
	return u.DeviceID
}

// CheckClientID returns ErrClientID unless clientID is exactly u's
// identity (ids are case-sensitive).
func (u Username) CheckClientID(clientID string) error {
	if clientID != u.ClientID() {
		return ErrClientID
	}
	return nil
}
