// Package hubquery is the IoT Hub query language of the built-in hubs
// (POST /devices/query), the subset that back ends and tools send:
//
//	SELECT * FROM devices [WHERE cond]
//	SELECT path [AS name], … FROM devices [WHERE cond]
//	SELECT COUNT() [AS name] FROM devices [WHERE cond]
//
// A cond compares property paths (deviceId, etag, deviceEtag, status,
// statusReason, connectionState, authenticationType, modelId, version,
// capabilities.iotEdge, tags.…, properties.desired.…,
// properties.reported.…, $version and $metadata included) with literals
// (strings in single or double quotes with backslash escapes, numbers,
// true, false, null) by = != <> < > <= >=, tests membership with IN [..]
// and NIN [..], and combines with AND, OR, NOT and parentheses;
// IS_DEFINED(path) is the one function. Keywords are case-insensitive,
// property names are not.
//
// The semantics are IoT Hub's (its engine's three-valued logic): a
// comparison with a missing property, or between values of different
// types, is undefined; NOT of undefined is undefined; only a condition
// that is true selects a device. So tags.x != 'a' does not select a
// device without tags.x, and neither does NOT (tags.x = 'a'). Ordering
// (< > <= >=) applies to numbers (as IEEE doubles) and strings (ordinal).
//
// Anything outside the subset — TOP, GROUP BY, ORDER BY, other
// functions, arithmetic, FROM devices.modules or devices.jobs, array
// indexing, twin members this hub does not serve — is refused by Parse
// with a *dps.Error of KindInvalid that names what is not supported,
// never answered approximately.
package hubquery
