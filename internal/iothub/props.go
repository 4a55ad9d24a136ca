package iothub

import (
	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/hubproto"
)

// The names under which a device-to-cloud message's System map keeps the
// system properties a device may send that dps.Message has no field for
// (IoT Hub's names for them on its built-in endpoint). Every transport
// maps to these: MQTT's $.to, $.exp, $.ifid and $.sub, HTTPS's iothub-to,
// iothub-expiry, iothub-interface-id and dt-subject headers.
const (
	PropTo          = "to"
	PropExpiry      = "absolute-expiry-time"
	PropInterfaceID = "iothub-interface-id"
	PropSubject     = "dt-subject"
)

// NewMessage is a device-to-cloud message as a device sent it: its system
// properties (decoded from an MQTT property bag or read from HTTPS
// headers), its application properties and its body, ready for Send.
// System properties that are empty are left out.
func NewMessage(sys hubproto.SystemProperties, props map[string]string, body []byte) dps.Message {
	m := dps.Message{
		MessageID:       sys.MessageID,
		CorrelationID:   sys.CorrelationID,
		UserID:          sys.UserID,
		ContentType:     sys.ContentType,
		ContentEncoding: sys.ContentEncoding,
		Properties:      props,
		Body:            body,
	}
	for _, p := range [...]struct{ name, value string }{
		{PropTo, sys.To}, {PropExpiry, sys.Expiry}, {PropInterfaceID, sys.InterfaceID}, {PropSubject, sys.Subject},
	} {
		if p.value == "" {
			continue
		}
		if m.System == nil {
			m.System = make(map[string]string, 4)
		}
		m.System[p.name] = p.value
	}
	return m
}
