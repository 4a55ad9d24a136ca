package routing

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/opendps/dps"
)

// Condition is a route's compiled condition: the subset of IoT Hub's
// routing query language over a message's properties (docs in
// README.md, "Message routing"):
//
//	expr    = or
//	or      = and { OR and }
//	and     = unary { AND unary }
//	unary   = NOT unary | primary
//	primary = '(' expr ')' | TRUE | FALSE | func '(' operand [',' operand] ')' | operand cmp operand
//	cmp     = '=' | '!=' | '<>' | '<' | '>' | '<=' | '>='
//	operand = property | 'string' | "string" | number | TRUE | FALSE
//	func    = IS_DEFINED | STARTS_WITH | ENDS_WITH | CONTAINS
//
// A property is an application property by name (letters, digits, '_',
// '-', '.') or a system property after '$' ($contentType,
// $contentEncoding, $messageId, $correlationId, $userId,
// $connectionDeviceId, $connectionModuleId, $iothub-message-source, or
// any other by its IoT Hub name, such as $iothub-connection-auth-method).
// Keywords are case-insensitive. Property values are strings: compared
// with a number they compare as numbers when they parse as one, with true
// or false when they are "true" or "false" (any case); otherwise, and
// when a property is not there, a comparison is undefined, which matches
// nothing (NOT undefined is undefined: IoT Hub's three-valued logic).
// $body and $twin references are refused: not supported.
type Condition struct {
	root node
	text string
}

// tri is a three-valued truth value.
type tri int8

const (
	tFalse tri = iota
	tTrue
	tUndef
)

type node interface {
	eval(m *dps.Message) tri
	String() string
}

// Compile parses a condition; "" is true.
func Compile(query string) (*Condition, error) {
	if strings.TrimSpace(query) == "" {
		query = "true"
	}
	p := &parser{src: query}
	if err := p.lex(); err != nil {
		return nil, err
	}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.toks) {
		return nil, p.errorf(p.toks[p.pos], "unexpected %s", p.toks[p.pos].text)
	}
	return &Condition{root: n, text: query}, nil
}

// Match reports whether m satisfies the condition (a nil Condition
// matches everything).
func (c *Condition) Match(m dps.Message) bool {
	if c == nil {
		return true
	}
	return c.root.eval(&m) == tTrue
}

// String is the condition fully parenthesized (it compiles back to the
// same condition).
func (c *Condition) String() string {
	if c == nil {
		return "true"
	}
	return c.root.String()
}

// ---- lexer

type tokKind int

const (
	tkIdent  tokKind = iota // a keyword or an application property
	tkSys                   // $name
	tkString                // quoted
	tkNumber
	tkOp    // = != <> < > <= >=
	tkPunct // ( ) ,
)

type token struct {
	kind tokKind
	text string // the keyword, property name, operator, or unquoted string
	num  float64
	at   int
}

type parser struct {
	src  string
	toks []token
	pos  int
}

func (p *parser) errorf(t token, format string, args ...any) error {
	return fmt.Errorf("route condition %q: at %d: %s", p.src, t.at+1, fmt.Sprintf(format, args...))
}

func identChar(r rune) bool {
	return r == '_' || r == '-' || r == '.' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

func (p *parser) lex() error {
	s := p.src
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')' || c == ',':
			p.toks = append(p.toks, token{kind: tkPunct, text: string(c), at: i})
			i++
		case c == '=' || c == '<' || c == '>' || c == '!':
			op := string(c)
			if i+1 < len(s) && (s[i+1] == '=' || (c == '<' && s[i+1] == '>')) {
				op = s[i : i+2]
			}
			if op == "!" {
				return p.errorf(token{at: i}, "'!' must be followed by '='")
			}
			p.toks = append(p.toks, token{kind: tkOp, text: op, at: i})
			i += len(op)
		case c == '\'' || c == '"':
			var b strings.Builder
			j := i + 1
			for ; ; j++ {
				if j >= len(s) {
					return p.errorf(token{at: i}, "unterminated string")
				}
				if s[j] == c {
					if j+1 < len(s) && s[j+1] == c { // '' inside '…'
						b.WriteByte(c)
						j++
						continue
					}
					break
				}
				b.WriteByte(s[j])
			}
			p.toks = append(p.toks, token{kind: tkString, text: b.String(), at: i})
			i = j + 1
		case c == '-' || c == '+' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.' || s[j] == 'e' || s[j] == 'E' ||
				((s[j] == '-' || s[j] == '+') && (s[j-1] == 'e' || s[j-1] == 'E'))) {
				j++
			}
			f, err := strconv.ParseFloat(s[i:j], 64)
			if err != nil || strings.ContainsAny(s[i:j], "xXpP_") {
				return p.errorf(token{at: i}, "bad number %q", s[i:j])
			}
			p.toks = append(p.toks, token{kind: tkNumber, text: s[i:j], num: f, at: i})
			i = j
		case c == '$':
			j := i + 1
			for j < len(s) {
				r, n := decodeRune(s[j:])
				if !identChar(r) {
					break
				}
				j += n
			}
			if j == i+1 {
				return p.errorf(token{at: i}, "'$' must name a system property")
			}
			name := s[i+1 : j]
			if l := strings.ToLower(name); l == "body" || strings.HasPrefix(l, "body.") || l == "twin" || strings.HasPrefix(l, "twin.") {
				return p.errorf(token{at: i}, "$%s: conditions on the message body or the device twin are not supported", name)
			}
			p.toks = append(p.toks, token{kind: tkSys, text: name, at: i})
			i = j
		default:
			r, n := decodeRune(s[i:])
			if !identChar(r) || r == '-' || r == '.' {
				return p.errorf(token{at: i}, "unexpected %q", r)
			}
			j := i + n
			for j < len(s) {
				r, n := decodeRune(s[j:])
				if !identChar(r) {
					break
				}
				j += n
			}
			p.toks = append(p.toks, token{kind: tkIdent, text: s[i:j], at: i})
			i = j
		}
	}
	return nil
}

func decodeRune(s string) (rune, int) {
	for _, r := range s {
		if r == unicode.ReplacementChar {
			return r, 1
		}
		return r, len(string(r))
	}
	return 0, 0
}

// ---- parser

func (p *parser) peek() (token, bool) {
	if p.pos < len(p.toks) {
		return p.toks[p.pos], true
	}
	return token{}, false
}

func (p *parser) keyword(kw string) bool {
	t, ok := p.peek()
	if ok && t.kind == tkIdent && strings.EqualFold(t.text, kw) {
		p.pos++
		return true
	}
	return false
}

func (p *parser) punct(c string) bool {
	t, ok := p.peek()
	if ok && t.kind == tkPunct && t.text == c {
		p.pos++
		return true
	}
	return false
}

func (p *parser) end() error {
	return fmt.Errorf("route condition %q: unexpected end", p.src)
}

const maxDepth = 100

func (p *parser) or() (node, error) { return p.orDepth(0) }

func (p *parser) orDepth(d int) (node, error) {
	if d > maxDepth {
		return nil, fmt.Errorf("route condition %q: nested too deep", p.src)
	}
	l, err := p.and(d)
	if err != nil {
		return nil, err
	}
	for p.keyword("OR") {
		r, err := p.and(d)
		if err != nil {
			return nil, err
		}
		l = orNode{l, r}
	}
	return l, nil
}

func (p *parser) and(d int) (node, error) {
	l, err := p.unary(d)
	if err != nil {
		return nil, err
	}
	for p.keyword("AND") {
		r, err := p.unary(d)
		if err != nil {
			return nil, err
		}
		l = andNode{l, r}
	}
	return l, nil
}

func (p *parser) unary(d int) (node, error) {
	if d > maxDepth {
		return nil, fmt.Errorf("route condition %q: nested too deep", p.src)
	}
	if p.keyword("NOT") {
		n, err := p.unary(d + 1)
		if err != nil {
			return nil, err
		}
		return notNode{n}, nil
	}
	return p.primary(d)
}

var funcs = map[string]int{"IS_DEFINED": 1, "STARTS_WITH": 2, "ENDS_WITH": 2, "CONTAINS": 2}

func (p *parser) primary(d int) (node, error) {
	t, ok := p.peek()
	if !ok {
		return nil, p.end()
	}
	if p.punct("(") {
		n, err := p.orDepth(d + 1)
		if err != nil {
			return nil, err
		}
		if !p.punct(")") {
			if t, ok := p.peek(); ok {
				return nil, p.errorf(t, "expected ')', found %s", t.text)
			}
			return nil, p.end()
		}
		return n, nil
	}
	if t.kind == tkIdent {
		if n, ok := funcs[strings.ToUpper(t.text)]; ok && p.pos+1 < len(p.toks) && p.toks[p.pos+1].text == "(" && p.toks[p.pos+1].kind == tkPunct {
			p.pos += 2
			f := funcNode{name: strings.ToUpper(t.text)}
			for i := range n {
				if i > 0 && !p.punct(",") {
					return nil, p.errorf(t, "%s takes %d arguments", f.name, n)
				}
				a, err := p.operand()
				if err != nil {
					return nil, err
				}
				f.args = append(f.args, a)
			}
			if f.name == "IS_DEFINED" {
				if _, ok := f.args[0].(propOperand); !ok {
					return nil, p.errorf(t, "IS_DEFINED takes a property")
				}
			}
			if !p.punct(")") {
				return nil, p.errorf(t, "%s takes %d argument(s) and a ')'", f.name, n)
			}
			return f, nil
		}
		if p.pos+1 < len(p.toks) && p.toks[p.pos+1].kind == tkPunct && p.toks[p.pos+1].text == "(" {
			return nil, p.errorf(t, "function %s is not supported (IS_DEFINED, STARTS_WITH, ENDS_WITH, CONTAINS)", t.text)
		}
	}
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	op, ok := p.peek()
	if !ok || op.kind != tkOp {
		if b, isBool := l.(boolOperand); isBool {
			return constNode(b), nil
		}
		if !ok {
			return nil, p.end()
		}
		return nil, p.errorf(op, "expected a comparison, found %s", op.text)
	}
	p.pos++
	r, err := p.operand()
	if err != nil {
		return nil, err
	}
	if op.text == "<>" {
		op.text = "!="
	}
	return cmpNode{op: op.text, l: l, r: r}, nil
}

func (p *parser) operand() (operand, error) {
	t, ok := p.peek()
	if !ok {
		return nil, p.end()
	}
	p.pos++
	switch t.kind {
	case tkString:
		return strOperand(t.text), nil
	case tkNumber:
		return numOperand(t.num), nil
	case tkSys:
		return propOperand{name: t.text, sys: true}, nil
	case tkIdent:
		switch strings.ToUpper(t.text) {
		case "TRUE":
			return boolOperand(true), nil
		case "FALSE":
			return boolOperand(false), nil
		case "AND", "OR", "NOT", "NULL", "UNDEFINED":
			return nil, p.errorf(t, "unexpected %s", t.text)
		}
		return propOperand{name: t.text}, nil
	}
	return nil, p.errorf(t, "unexpected %s", t.text)
}

// ---- evaluation

type operand interface {
	// value returns the operand's value for m; ok is false when it is
	// undefined (a property not there).
	value(m *dps.Message) (any, bool)
	String() string
}

type strOperand string
type numOperand float64
type boolOperand bool
type propOperand struct {
	name string
	sys  bool
}

func (s strOperand) value(*dps.Message) (any, bool) { return string(s), true }
func (s strOperand) String() string                 { return "'" + strings.ReplaceAll(string(s), "'", "''") + "'" }
func (n numOperand) value(*dps.Message) (any, bool) { return float64(n), true }
func (n numOperand) String() string                 { return strconv.FormatFloat(float64(n), 'g', -1, 64) }
func (b boolOperand) value(*dps.Message) (any, bool) {
	return bool(b), true
}
func (b boolOperand) String() string { return strconv.FormatBool(bool(b)) }
func (p propOperand) String() string {
	if p.sys {
		return "$" + p.name
	}
	return p.name
}

func (p propOperand) value(m *dps.Message) (any, bool) {
	if !p.sys {
		v, ok := m.Properties[p.name]
		return v, ok
	}
	nonEmpty := func(s string) (any, bool) { return s, s != "" }
	switch strings.ToLower(p.name) {
	case "contenttype", "content-type":
		return nonEmpty(m.ContentType)
	case "contentencoding", "content-encoding":
		return nonEmpty(m.ContentEncoding)
	case "messageid", "message-id":
		return nonEmpty(m.MessageID)
	case "correlationid", "correlation-id":
		return nonEmpty(m.CorrelationID)
	case "userid", "user-id":
		return nonEmpty(m.UserID)
	case "connectiondeviceid", "iothub-connection-device-id", "deviceid":
		return nonEmpty(m.DeviceID)
	case "connectionmoduleid", "iothub-connection-module-id", "moduleid":
		return nonEmpty(m.ModuleID)
	case PropMessageSource:
		return SourceOf(*m).MessageSource(), true
	}
	v, ok := m.System[p.name]
	return v, ok
}

type constNode bool

func (c constNode) eval(*dps.Message) tri {
	if c {
		return tTrue
	}
	return tFalse
}
func (c constNode) String() string { return strconv.FormatBool(bool(c)) }

type notNode struct{ n node }

func (n notNode) eval(m *dps.Message) tri {
	switch n.n.eval(m) {
	case tTrue:
		return tFalse
	case tFalse:
		return tTrue
	}
	return tUndef
}
func (n notNode) String() string { return "(NOT " + n.n.String() + ")" }

type andNode struct{ l, r node }

func (n andNode) eval(m *dps.Message) tri {
	l := n.l.eval(m)
	if l == tFalse {
		return tFalse
	}
	r := n.r.eval(m)
	switch {
	case r == tFalse:
		return tFalse
	case l == tTrue && r == tTrue:
		return tTrue
	}
	return tUndef
}
func (n andNode) String() string { return "(" + n.l.String() + " AND " + n.r.String() + ")" }

type orNode struct{ l, r node }

func (n orNode) eval(m *dps.Message) tri {
	l := n.l.eval(m)
	if l == tTrue {
		return tTrue
	}
	r := n.r.eval(m)
	switch {
	case r == tTrue:
		return tTrue
	case l == tFalse && r == tFalse:
		return tFalse
	}
	return tUndef
}
func (n orNode) String() string { return "(" + n.l.String() + " OR " + n.r.String() + ")" }

type funcNode struct {
	name string
	args []operand
}

func (f funcNode) String() string {
	var a []string
	for _, x := range f.args {
		a = append(a, x.String())
	}
	return f.name + "(" + strings.Join(a, ", ") + ")"
}

func (f funcNode) eval(m *dps.Message) tri {
	if f.name == "IS_DEFINED" {
		_, ok := f.args[0].value(m)
		return truth(ok)
	}
	a, ok1 := f.args[0].value(m)
	b, ok2 := f.args[1].value(m)
	as, s1 := a.(string)
	bs, s2 := b.(string)
	if !ok1 || !ok2 || !s1 || !s2 {
		return tUndef
	}
	switch f.name {
	case "STARTS_WITH":
		return truth(strings.HasPrefix(as, bs))
	case "ENDS_WITH":
		return truth(strings.HasSuffix(as, bs))
	}
	return truth(strings.Contains(as, bs))
}

func truth(b bool) tri {
	if b {
		return tTrue
	}
	return tFalse
}

type cmpNode struct {
	op   string
	l, r operand
}

func (c cmpNode) String() string { return "(" + c.l.String() + " " + c.op + " " + c.r.String() + ")" }

func (c cmpNode) eval(m *dps.Message) tri {
	a, ok1 := c.l.value(m)
	b, ok2 := c.r.value(m)
	if !ok1 || !ok2 {
		return tUndef
	}
	a, b, ok := coerce(a, b)
	if !ok {
		return tUndef
	}
	var k int // -1, 0, 1
	switch x := a.(type) {
	case string:
		k = strings.Compare(x, b.(string))
	case float64:
		y := b.(float64)
		switch {
		case x < y:
			k = -1
		case x > y:
			k = 1
		case x != y: // NaN
			return tUndef
		}
	case bool:
		y := b.(bool)
		if x != y {
			if c.op != "=" && c.op != "!=" {
				return tUndef
			}
			k = 1
		} else if c.op != "=" && c.op != "!=" {
			return tUndef
		}
	}
	switch c.op {
	case "=":
		return truth(k == 0)
	case "!=":
		return truth(k != 0)
	case "<":
		return truth(k < 0)
	case "<=":
		return truth(k <= 0)
	case ">":
		return truth(k > 0)
	}
	return truth(k >= 0)
}

// coerce makes a and b the same type: a string compared with a number or
// a bool is read as one; false when it cannot be.
func coerce(a, b any) (any, any, bool) {
	switch x := a.(type) {
	case string:
		switch y := b.(type) {
		case string:
			return x, y, true
		case float64:
			f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
			return f, y, err == nil
		case bool:
			v, err := strconv.ParseBool(strings.ToLower(x))
			return v, y, err == nil && (strings.EqualFold(x, "true") || strings.EqualFold(x, "false"))
		}
	case float64:
		if s, ok := b.(string); ok {
			b2, a2, ok := coerce(s, x)
			return a2, b2, ok
		}
		if y, ok := b.(float64); ok {
			return x, y, true
		}
	case bool:
		if s, ok := b.(string); ok {
			b2, a2, ok := coerce(s, x)
			return a2, b2, ok
		}
		if y, ok := b.(bool); ok {
			return x, y, true
		}
	}
	return nil, nil, false
}
