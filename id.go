package dps

import "strings"

// MaxRegistrationIDLen is the longest registration ID DPS accepts.
const MaxRegistrationIDLen = 128

// ValidateRegistrationID checks s against the DPS rules: 1–128 characters of
// ASCII letters, digits, '-', '.', '_' and ':', starting and ending with a
// letter or digit (a trailing '-' is allowed, as Azure allows it).
// Registration IDs are case-insensitive; callers compare them with
// [FoldID].
func ValidateRegistrationID(s string) error {
	if s == "" || len(s) > MaxRegistrationIDLen {
		return &Error{Kind: KindInvalid, Code: CodeInvalid, Message: "registration ID must be 1-128 characters"}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlnum(c):
		case c == '-' || c == '.' || c == '_' || c == ':':
			if i == 0 || (i == len(s)-1 && c != '-') {
				return &Error{Kind: KindInvalid, Code: CodeInvalid, Message: "registration ID must start and end with a letter or digit"}
			}
		default:
			return &Error{Kind: KindInvalid, Code: CodeInvalid, Message: "registration ID may contain only letters, digits, '-', '.', '_' and ':'"}
		}
	}
	return nil
}

// ValidateGroupID checks an enrollment group ID with the same character rules
// as a registration ID.
func ValidateGroupID(s string) error {
	if err := ValidateRegistrationID(s); err != nil {
		return &Error{Kind: KindInvalid, Code: CodeInvalid, Message: strings.Replace(AsError(err).Message, "registration ID", "enrollment group ID", 1)}
	}
	return nil
}

// ValidateIDScope checks an ID scope: "0ne" followed by 8 letters or digits.
func ValidateIDScope(s string) error {
	if len(s) != 11 || !strings.EqualFold(s[:3], "0ne") {
		return Errorf(KindInvalid, "ID scope must be \"0ne\" followed by 8 letters or digits")
	}
	for i := 3; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return Errorf(KindInvalid, "ID scope must be \"0ne\" followed by 8 letters or digits")
		}
	}
	return nil
}

// FoldID returns the canonical (lower-case) form of a case-insensitive ID,
// used as a storage key.
func FoldID(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
