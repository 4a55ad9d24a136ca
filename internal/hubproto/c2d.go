package hubproto

import "sort"

// C2DProperties are the properties of a cloud-to-device message that go
// into its MQTT property bag; "" means not set (left out), except Ack.
type C2DProperties struct {
	MessageID       string // $.mid
	To              string // $.to, /devices/{id}/messages/devicebound
	CorrelationID   string // $.cid
	UserID          string // $.uid
	ContentType     string // $.ct
	ContentEncoding string // $.ce
	Expiry          string // $.exp, absolute (ISO 8601)
	Ack             string // iothub-ack; "" is sent as none
	// Application properties, sent after the system ones in the order of
	// their names.
	Properties map[string]string
}

// C2DBag is the property bag of a C2D delivery, as IoT Hub writes it:
// %24.mid, %24.to, %24.cid, %24.uid, %24.ct, %24.ce, %24.exp (only those
// set), iothub-ack, then the application properties, every key and value
// percent-encoded as EncodeBag does (RFC 3986 unreserved characters kept,
// upper-case hex, '/' encoded too). An application property named like a
// system key or iothub-ack is left out: the device could not tell it from
// the hub's.
func C2DBag(p C2DProperties) string {
	props := make([]Property, 0, 8+len(p.Properties))
	for _, kv := range [...][2]string{
		{PropMessageID, p.MessageID}, {PropTo, p.To}, {PropCorrelationID, p.CorrelationID}, {PropUserID, p.UserID},
		{PropContentType, p.ContentType}, {PropContentEncoding, p.ContentEncoding}, {PropExpiry, p.Expiry},
	} {
		if kv[1] != "" {
			props = append(props, Property{Key: kv[0], Value: kv[1]})
		}
	}
	ack := p.Ack
	if ack == "" {
		ack = "none"
	}
	props = append(props, Property{Key: PropAck, Value: ack})
	names := make([]string, 0, len(p.Properties))
	for k := range p.Properties {
		if k == "" || k == PropAck || IsSystemKey(k) {
			continue
		}
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		props = append(props, Property{Key: k, Value: p.Properties[k]})
	}
	return EncodeBag(props)
}

// C2DTopic is the topic of a C2D delivery to deviceID:
// devices/{id}/messages/devicebound/{C2DBag}.
func C2DTopic(deviceID string, p C2DProperties) string {
	return devicesPrefix + deviceID + deviceboundSuffix + C2DBag(p)
}
