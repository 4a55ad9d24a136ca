package hubquery

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/opendps/dps"
)

type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokNumber
	tokString
	tokPunct // ( ) [ ] , . *
	tokOp    // = != <> < > <= >=
)

type token struct {
	kind tokKind
	text string // identifier, number as written, decoded string, punctuation, operator
	pos  int    // byte offset in the query
}

func (t token) String() string {
	switch t.kind {
	case tokEOF:
		return "the end of the query"
	case tokString:
		return "the string " + quote(t.text)
	case tokNumber:
		return "the number " + t.text
	}
	return "'" + t.text + "'"
}

func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}

// refuse is a query outside the supported subset, or not valid: 400
// ArgumentInvalid.
func refuse(format string, args ...any) *dps.Error {
	return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "Invalid query: " + fmt.Sprintf(format, args...)}
}

func isIdentStart(c byte) bool {
	return c == '_' || c == '$' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func isIdentPart(c byte) bool { return isIdentStart(c) || '0' <= c && c <= '9' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// lex splits the query into tokens, ending with tokEOF.
func lex(s string) ([]token, error) {
	if !utf8.ValidString(s) {
		return nil, refuse("the query is not valid UTF-8")
	}
	var out []token
	for i := 0; ; {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n') {
			i++
		}
		if i == len(s) {
			return append(out, token{kind: tokEOF, pos: i}), nil
		}
		c, start := s[i], i
		switch {
		case isIdentStart(c):
			for i < len(s) && isIdentPart(s[i]) {
				i++
			}
			out = append(out, token{tokIdent, s[start:i], start})
		case isDigit(c) || (c == '-' || c == '+' || c == '.') && i+1 < len(s) && isDigit(s[i+1]):
			n, err := lexNumber(s, i)
			if err != nil {
				return nil, err
			}
			i += len(n)
			out = append(out, token{tokNumber, n, start})
		case c == '\'' || c == '"':
			str, n, err := lexString(s, i)
			if err != nil {
				return nil, err
			}
			i += n
			out = append(out, token{tokString, str, start})
		case strings.ContainsRune("()[],.*", rune(c)):
			i++
			out = append(out, token{tokPunct, string(c), start})
		case c == '=':
			i++
			out = append(out, token{tokOp, "=", start})
		case c == '!' || c == '<' || c == '>':
			op := string(c)
			if i+1 < len(s) && (s[i+1] == '=' || c == '<' && s[i+1] == '>') {
				op = s[i : i+2]
			}
			if op == "!" {
				return nil, refuse("'!' at offset %d: use != or NOT", start)
			}
			i += len(op)
			out = append(out, token{tokOp, op, start})
		default:
			r, _ := utf8.DecodeRuneInString(s[i:])
			return nil, refuse("unexpected character %q at offset %d", r, start)
		}
	}
}

// lexNumber reads a decimal number at s[i:]: an optional sign, digits
// with an optional fraction, an optional exponent. Hexadecimal literals
// are refused.
func lexNumber(s string, i int) (string, error) {
	start := i
	if s[i] == '-' || s[i] == '+' {
		i++
	}
	if strings.HasPrefix(s[i:], "0x") || strings.HasPrefix(s[i:], "0X") {
		return "", refuse("hexadecimal numbers (offset %d) are not supported", start)
	}
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '-' || s[j] == '+') {
			j++
		}
		if j < len(s) && isDigit(s[j]) {
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			i = j
		}
	}
	if i < len(s) && isIdentPart(s[i]) {
		return "", refuse("malformed number at offset %d", start)
	}
	n := s[start:i]
	if _, err := strconv.ParseFloat(n, 64); err != nil {
		return "", refuse("number %s at offset %d is out of range", n, start)
	}
	return n, nil
}

// lexString reads a string literal at s[i:], in single or double quotes,
// with the escapes of the IoT Hub query language (\' \" \\ \/ \b \f \n \r
// \t \uXXXX). It returns the decoded string and the literal's length.
func lexString(s string, i int) (string, int, error) {
	q, start := s[i], i
	var b strings.Builder
	for i++; i < len(s); i++ {
		c := s[i]
		switch {
		case c == q:
			return b.String(), i + 1 - start, nil
		case c == '\\':
			if i+1 == len(s) {
				break
			}
			i++
			switch s[i] {
			case '\'', '"', '\\', '/':
				b.WriteByte(s[i])
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				r, n, err := lexUnicode(s, i-1)
				if err != nil {
					return "", 0, err
				}
				b.WriteRune(r)
				i += n - 2
			default:
				return "", 0, refuse("unknown escape \\%c at offset %d", s[i], i-1)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, refuse("the string starting at offset %d has no closing quote", start)
}

// lexUnicode reads \uXXXX at s[i:] (and a second one when the first is a
// high surrogate) and returns the rune and the escapes' length. A lone
// surrogate is refused: it names no character.
func lexUnicode(s string, i int) (rune, int, error) {
	hex4 := func(j int) (rune, bool) {
		if j+6 > len(s) || s[j] != '\\' || s[j+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(s[j+2:j+6], 16, 16)
		return rune(v), err == nil
	}
	r, ok := hex4(i)
	if !ok {
		return 0, 0, refuse("malformed \\u escape at offset %d", i)
	}
	if utf16.IsSurrogate(r) {
		r2, ok := hex4(i + 6)
		if c := utf16.DecodeRune(r, r2); ok && c != utf8.RuneError {
			return c, 12, nil
		}
		return 0, 0, refuse("\\u escape at offset %d is half of a surrogate pair", i)
	}
	return r, 6, nil
}
