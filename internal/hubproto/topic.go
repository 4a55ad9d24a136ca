package hubproto

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is what a device's PUBLISH is.
type Kind int

// The kinds of device publishes.
const (
	// KindTelemetry: devices/{id}/messages/events/{bag}
	// (or devices/{id}/modules/{mid}/messages/events/{bag}).
	KindTelemetry Kind = iota + 1
	// KindTwinGet: $iothub/twin/GET/?$rid={rid}.
	KindTwinGet
	// KindReportedPatch: $iothub/twin/PATCH/properties/reported/?$rid={rid}.
	KindReportedPatch
	// KindMethodResponse: $iothub/methods/res/{status}/?$rid={rid}.
	KindMethodResponse
	// KindIssueCertificate: $iothub/credentials/POST/issueCertificate/?$rid={rid},
	// a certificate renewal (body {"id":…,"csr":…}).
	KindIssueCertificate
)

func (k Kind) String() string {
	switch k {
	case KindTelemetry:
		return "telemetry"
	case KindTwinGet:
		return "twin GET"
	case KindReportedPatch:
		return "reported PATCH"
	case KindMethodResponse:
		return "method response"
	case KindIssueCertificate:
		return "issueCertificate"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Publish is a parsed device PUBLISH topic.
type Publish struct {
	Kind Kind
	// DeviceID and ModuleID are the ids in a telemetry topic, raw; the
	// caller checks them against the connection's identity.
	DeviceID string
	ModuleID string
	// RequestID is $rid exactly as sent (twin and method topics); the
	// response echoes it byte for byte.
	RequestID string
	// Status is a method response's status (any integer).
	Status int
	// Properties is the decoded telemetry property bag, or the decoded
	// members after '?' of a twin or method topic (which include $rid,
	// and $version when a device sends one).
	Properties []Property
}

const (
	devicesPrefix     = "devices/"
	modulesPrefix     = "modules/"
	eventsPath        = "messages/events"
	twinGetPrefix     = "$iothub/twin/GET/?"
	reportedPrefix    = "$iothub/twin/PATCH/properties/reported/?"
	methodResPrefix   = "$iothub/methods/res/"
	twinResPrefix     = "$iothub/twin/res/"
	desiredPrefix     = "$iothub/twin/PATCH/properties/desired/"
	methodPostPrefix  = "$iothub/methods/POST/"
	issueCertPrefix   = "$iothub/credentials/POST/issueCertificate/?"
	credentialsRes    = "$iothub/credentials/res/"
	deviceboundSuffix = "/messages/devicebound/"
)

// ParseTopic parses the topic of a PUBLISH from a device.
//
// Telemetry: devices/{id}/messages/events, …/events/ and …/events/{bag}, with
// one trailing '/' after the bag stripped (C# and Node modules add it); the
// bag is everything after events/, never split on '/' (DecodeBag). A
// leading '?' on the bag is kept, as Azure does: it becomes part of the
// first key.
//
// Twin and method topics must carry a $rid member (literal $rid or
// %24rid); other members, such as $version, are accepted in any order.
// Anything else is ErrTopic.
func ParseTopic(topic string) (Publish, error) {
	if rest, ok := strings.CutPrefix(topic, devicesPrefix); ok {
		return parseTelemetry(rest)
	}
	if q, ok := strings.CutPrefix(topic, twinGetPrefix); ok {
		return parseRequest(KindTwinGet, 0, q)
	}
	if q, ok := strings.CutPrefix(topic, reportedPrefix); ok {
		return parseRequest(KindReportedPatch, 0, q)
	}
	if q, ok := strings.CutPrefix(topic, issueCertPrefix); ok {
		return parseRequest(KindIssueCertificate, 0, q)
	}
	if rest, ok := strings.CutPrefix(topic, methodResPrefix); ok {
		status, q, ok := strings.Cut(rest, "/?")
		if !ok {
			return Publish{}, fmt.Errorf("%w: method response without /?$rid=", ErrTopic)
		}
		n, err := parseStatus(status)
		if err != nil {
			return Publish{}, fmt.Errorf("%w: method response status %q", ErrTopic, status)
		}
		return parseRequest(KindMethodResponse, n, q)
	}
	return Publish{}, fmt.Errorf("%w: %q", ErrTopic, topic)
}

func parseTelemetry(rest string) (Publish, error) {
	p := Publish{Kind: KindTelemetry}
	var ok bool
	p.DeviceID, rest, ok = strings.Cut(rest, "/")
	if !ok || !validTopicID(p.DeviceID) {
		return Publish{}, fmt.Errorf("%w: bad device id in a devices/ topic", ErrTopic)
	}
	if r, isModule := strings.CutPrefix(rest, modulesPrefix); isModule {
		p.ModuleID, rest, ok = strings.Cut(r, "/")
		if !ok || !validTopicID(p.ModuleID) {
			return Publish{}, fmt.Errorf("%w: bad module id in a devices/ topic", ErrTopic)
		}
	}
	rest, ok = strings.CutPrefix(rest, eventsPath)
	if !ok || rest != "" && rest[0] != '/' {
		return Publish{}, fmt.Errorf("%w: devices/ topic that is not messages/events", ErrTopic)
	}
	if rest != "" {
		bag := rest[1:]
		bag = strings.TrimSuffix(bag, "/")
		p.Properties = DecodeBag(bag)
	}
	return p, nil
}

func parseRequest(kind Kind, status int, query string) (Publish, error) {
	p := Publish{Kind: kind, Status: status}
	haveRID := false
	for q := query; q != ""; {
		var member string
		member, q, _ = strings.Cut(q, "&")
		k, v, ok := strings.Cut(member, "=")
		if ok && unescape(k) == "$rid" {
			p.RequestID, haveRID = v, true
			break
		}
	}
	if !haveRID {
		return Publish{}, fmt.Errorf("%w: %s without $rid", ErrTopic, kind)
	}
	p.Properties = DecodeBag(query)
	return p, nil
}

// parseStatus parses a method response status: an optionally signed
// decimal that fits in 32 bits.
func parseStatus(s string) (int, error) {
	if s == "" || s[0] == '+' {
		return 0, strconv.ErrSyntax
	}
	n, err := strconv.ParseInt(s, 10, 32)
	return int(n), err
}

// validTopicID reports whether id can be a device or module id in a topic:
// not empty, and no MQTT wildcard.
func validTopicID(id string) bool {
	return id != "" && !strings.ContainsAny(id, "+#")
}

// FilterKind is what a device's subscription is for.
type FilterKind int

// The subscriptions a device may make.
const (
	// FilterC2D: devices/{id}/messages/devicebound/#, or
	// devices/+/messages/devicebound/# (embedded C).
	FilterC2D FilterKind = iota + 1
	// FilterMethods: $iothub/methods/POST/#.
	FilterMethods
	// FilterTwinResponses: $iothub/twin/res/#.
	FilterTwinResponses
	// FilterDesired: $iothub/twin/PATCH/properties/desired/#.
	FilterDesired
	// FilterCredentials: $iothub/credentials/res/#, the answers to
	// certificate renewals.
	FilterCredentials
)

func (k FilterKind) String() string {
	switch k {
	case FilterC2D:
		return "C2D"
	case FilterMethods:
		return "methods"
	case FilterTwinResponses:
		return "twin responses"
	case FilterDesired:
		return "desired properties"
	case FilterCredentials:
		return "credentials"
	}
	return "FilterKind(" + strconv.Itoa(int(k)) + ")"
}

// Filter is a parsed subscription topic filter.
type Filter struct {
	Kind FilterKind
	// DeviceID is the id in a C2D filter, raw; "" for devices/+/… (which
	// means the connected device). The caller checks it against the
	// connection's identity.
	DeviceID string
}

// The filters the SDKs subscribe to. Every SDK read (Node, C, embedded C,
// Python, C#, Java) uses exactly these spellings.
const (
	methodsFilter       = "$iothub/methods/POST/#"
	twinResponsesFilter = "$iothub/twin/res/#"
	desiredFilter       = "$iothub/twin/PATCH/properties/desired/#"
	credentialsFilter   = "$iothub/credentials/res/#"
	deviceboundFilter   = "/messages/devicebound/#"
)

// ParseFilter parses a SUBSCRIBE topic filter of a device. Anything but
// the documented filters (other wildcards, module filters, other
// devices' filters are the caller's check) is ErrFilter, which the hub
// answers with SUBACK 0x80.
func ParseFilter(filter string) (Filter, error) {
	switch filter {
	case methodsFilter:
		return Filter{Kind: FilterMethods}, nil
	case twinResponsesFilter:
		return Filter{Kind: FilterTwinResponses}, nil
	case desiredFilter:
		return Filter{Kind: FilterDesired}, nil
	case credentialsFilter:
		return Filter{Kind: FilterCredentials}, nil
	}
	if rest, ok := strings.CutPrefix(filter, devicesPrefix); ok {
		if id, ok := strings.CutSuffix(rest, deviceboundFilter); ok {
			if id == "+" {
				return Filter{Kind: FilterC2D}, nil
			}
			if validTopicID(id) && !strings.Contains(id, "/") {
				return Filter{Kind: FilterC2D, DeviceID: id}, nil
			}
		}
	}
	return Filter{}, fmt.Errorf("%w: %q", ErrFilter, filter)
}

// Topic returns f's filter for the device deviceID, the form the hub keeps
// (devices/+/… becomes the device's own filter).
func (f Filter) Topic(deviceID string) string {
	switch f.Kind {
	case FilterC2D:
		return devicesPrefix + deviceID + deviceboundFilter
	case FilterMethods:
		return methodsFilter
	case FilterTwinResponses:
		return twinResponsesFilter
	case FilterDesired:
		return desiredFilter
	case FilterCredentials:
		return credentialsFilter
	}
	return ""
}

// CredentialsResponseTopic is the topic of an answer to a certificate
// renewal: $iothub/credentials/res/{status}/?$rid={rid} (202 when it is
// accepted, then 200 with the certificates, or an error status), the rid
// as the device sent it.
func CredentialsResponseTopic(status int, rid string) string {
	return credentialsRes + strconv.Itoa(status) + "/?$rid=" + rid
}

// TwinResponseTopic is the topic of a twin response:
// $iothub/twin/res/{status}/?$rid={rid}. The rid goes out as the device
// sent it. For a successful reported PATCH use ReportedResponseTopic.
func TwinResponseTopic(status int, rid string) string {
	return twinResPrefix + strconv.Itoa(status) + "/?$rid=" + rid
}

// ReportedResponseTopic is the answer to a successful reported PATCH:
// $iothub/twin/res/204/?$rid={rid}&$version={version}, $rid first (the C
// SDK requires it), version the new reported $version.
func ReportedResponseTopic(rid string, version int64) string {
	return twinResPrefix + "204/?$rid=" + rid + "&$version=" + strconv.FormatInt(version, 10)
}

// DesiredPatchTopic is the topic of a desired-property notification:
// $iothub/twin/PATCH/properties/desired/?$version={version} (embedded C
// needs the '?' right after desired/ and the $version).
func DesiredPatchTopic(version int64) string {
	return desiredPrefix + "?$version=" + strconv.FormatInt(version, 10)
}

// MethodRequestTopic is the topic of a direct-method request:
// $iothub/methods/POST/{name}/?$rid={rid}, nothing after the rid (the C and
// C# SDKs copy the rest of the topic into the rid). name must satisfy
// ValidMethodName; rid should be short [0-9a-f] (Node reads it with
// querystring.parse, so '+' and '%' would change).
func MethodRequestTopic(name, rid string) string {
	return methodPostPrefix + name + "/?$rid=" + rid
}

// ValidMethodName reports whether name can be a direct-method name:
// printable US-ASCII except $ ( ) < > @ , ; : \ " / [ ] ? = { } space and
// tab, not empty. MQTT wildcards (+ #) are refused too: they cannot appear
// in a topic name.
func ValidMethodName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`$()<>@,;:\"/[]?={}+#`, c) >= 0 {
			return false
		}
	}
	return true
}

// DeviceboundTopic is the topic of a C2D message to deviceID:
// devices/{id}/messages/devicebound/{bag}, the '/' after devicebound always
// present (Node drops a message without it), the bag encoded by EncodeBag.
func DeviceboundTopic(deviceID string, props []Property) string {
	return devicesPrefix + deviceID + deviceboundSuffix + EncodeBag(props)
}
