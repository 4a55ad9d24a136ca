package hubquery

import (
	"strconv"
	"strings"
)

// maxDepth bounds the nesting of a condition (parentheses and NOT).
const maxDepth = 64

// maxLength bounds a query's text.
const maxLength = 64 * 1024

// Parse parses a query of the supported subset. Anything else is a
// *dps.Error of KindInvalid (IoT Hub's 400 ArgumentInvalid) that says
// what is not supported.
func Parse(text string) (*Query, error) {
	if len(text) > maxLength {
		return nil, refuse("the query is longer than %d bytes", maxLength)
	}
	toks, err := lex(text)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	q, err := p.query()
	if err != nil {
		return nil, err
	}
	return q, nil
}

type parser struct {
	toks  []token
	i     int
	depth int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

// keyword reports whether t is the keyword kw (any case).
func keyword(t token, kw string) bool { return t.kind == tokIdent && strings.EqualFold(t.text, kw) }

func (p *parser) acceptKeyword(kw string) bool {
	if keyword(p.peek(), kw) {
		p.i++
		return true
	}
	return false
}

func (p *parser) acceptPunct(s string) bool {
	if t := p.peek(); t.kind == tokPunct && t.text == s {
		p.i++
		return true
	}
	return false
}

func (p *parser) expectPunct(s, what string) error {
	if !p.acceptPunct(s) {
		return p.unexpected(what)
	}
	return nil
}

func (p *parser) unexpected(want string) error {
	t := p.peek()
	return refuse("expected %s at offset %d, found %s", want, t.pos, t)
}

// reserved words that cannot name a projection's alias.
var reserved = map[string]bool{"select": true, "from": true, "where": true, "and": true, "or": true, "not": true,
	"in": true, "nin": true, "as": true, "group": true, "by": true, "top": true, "true": true, "false": true,
	"null": true, "undefined": true, "order": true}

func (p *parser) query() (*Query, error) {
	if !p.acceptKeyword("select") {
		return nil, p.unexpected("SELECT")
	}
	if keyword(p.peek(), "top") {
		return nil, refuse("SELECT TOP is not supported; page with x-ms-max-item-count instead")
	}
	if keyword(p.peek(), "distinct") || keyword(p.peek(), "value") {
		return nil, refuse("SELECT %s is not supported", strings.ToUpper(p.peek().text))
	}
	q := &Query{}
	if err := p.selectList(q); err != nil {
		return nil, err
	}
	if !p.acceptKeyword("from") {
		return nil, p.unexpected("FROM or ','")
	}
	from := p.next()
	if !keyword(from, "devices") {
		return nil, refuse("FROM %s at offset %d is not supported; only FROM devices is", from, from.pos)
	}
	if t := p.peek(); t.kind == tokPunct && t.text == "." {
		return nil, refuse("FROM devices.%s is not supported; only FROM devices is", p.toks[p.i+1].text)
	}
	if p.acceptKeyword("where") {
		c, err := p.or()
		if err != nil {
			return nil, err
		}
		q.where = c
	}
	switch t := p.peek(); {
	case keyword(t, "group"):
		return nil, refuse("GROUP BY is not supported")
	case keyword(t, "order"):
		return nil, refuse("ORDER BY is not supported")
	case t.kind != tokEOF:
		return nil, p.unexpected("the end of the query (or WHERE, AND, OR)")
	}
	return q, nil
}

func (p *parser) selectList(q *Query) error {
	if p.acceptPunct("*") {
		q.kind = SelectTwins
		return nil
	}
	if keyword(p.peek(), "count") && p.toks[p.i+1].kind == tokPunct && p.toks[p.i+1].text == "(" {
		p.i += 2
		if err := p.expectPunct(")", "')' (COUNT takes no argument)"); err != nil {
			return err
		}
		q.kind, q.countName = SelectCount, "numberOfDevices"
		if p.acceptKeyword("as") {
			alias, err := p.alias()
			if err != nil {
				return err
			}
			q.countName = alias
		}
		if t := p.peek(); t.kind == tokPunct && t.text == "," {
			return refuse("COUNT() with other projections needs GROUP BY, which is not supported")
		}
		return nil
	}
	q.kind = SelectProjection
	seen := map[string]bool{}
	for {
		t := p.peek()
		if t.kind == tokIdent && p.toks[p.i+1].kind == tokPunct && p.toks[p.i+1].text == "(" {
			return refuse("function %s in SELECT at offset %d is not supported; only *, COUNT() and property paths are", t.text, t.pos)
		}
		pa, err := p.path()
		if err != nil {
			return err
		}
		name := pa.segs[len(pa.segs)-1]
		if p.acceptKeyword("as") {
			if name, err = p.alias(); err != nil {
				return err
			}
		}
		if seen[name] {
			return refuse("two projections are named %s; give one of them another name with AS", name)
		}
		seen[name] = true
		q.proj = append(q.proj, projection{pa, name})
		if !p.acceptPunct(",") {
			return nil
		}
		if keyword(p.peek(), "count") {
			return refuse("COUNT() with other projections needs GROUP BY, which is not supported")
		}
	}
}

func (p *parser) alias() (string, error) {
	t := p.next()
	if t.kind != tokIdent || reserved[strings.ToLower(t.text)] {
		p.i--
		return "", p.unexpected("a name after AS")
	}
	return t.text, nil
}

// The roots of the paths a query may use, as the twin JSON names them.
// leaves have no members; containers are followed into.
var (
	leafRoots = map[string]bool{"deviceId": true, "etag": true, "deviceEtag": true, "status": true,
		"statusReason": true, "connectionState": true, "authenticationType": true, "modelId": true, "version": true}
	// Twin members of IoT Hub that this hub's queries do not serve: its
	// twin JSON shows placeholders for them.
	unservedRoots = []string{"statusUpdateTime", "lastActivityTime", "cloudToDeviceMessageCount", "x509Thumbprint",
		"connectionStateUpdatedTime", "moduleId", "deviceScope", "parentScopes", "generationId"}
)

func (p *parser) path() (path, error) {
	t := p.peek()
	if t.kind != tokIdent || reserved[strings.ToLower(t.text)] {
		return path{}, p.unexpected("a property path (deviceId, tags.…, properties.reported.…)")
	}
	p.i++
	pa := path{segs: []string{t.text}}
	for p.acceptPunct(".") {
		s := p.peek()
		if s.kind != tokIdent {
			return path{}, p.unexpected("a property name after '.'")
		}
		p.i++
		pa.segs = append(pa.segs, s.text)
	}
	if b := p.peek(); b.kind == tokPunct && b.text == "[" {
		return path{}, refuse("'[' at offset %d: indexing into arrays or by quoted names is not supported", b.pos)
	}
	return pa, checkRoot(pa, t.pos)
}

// checkRoot refuses a path the twin JSON has no such member for, or one
// this hub does not serve: IoT Hub would answer nothing for it, which is
// almost always a mistake worth saying.
func checkRoot(pa path, pos int) error {
	root, n := pa.segs[0], len(pa.segs)
	switch {
	case leafRoots[root]:
		if n > 1 {
			return refuse("%s (offset %d) has no members", root, pos)
		}
		return nil
	case root == "tags":
		return nil
	case root == "properties":
		if n >= 2 && (pa.segs[1] == "desired" || pa.segs[1] == "reported") {
			return nil
		}
		return refuse("%s (offset %d): use properties.desired.… or properties.reported.…", pa, pos)
	case root == "capabilities":
		if n == 2 && pa.segs[1] == "iotEdge" {
			return nil
		}
		return refuse("%s (offset %d): only capabilities.iotEdge is a capability", pa, pos)
	}
	for _, u := range unservedRoots {
		if root == u {
			return refuse("%s (offset %d) is not supported in queries by this hub", root, pos)
		}
	}
	for r := range leafRoots {
		if strings.EqualFold(r, root) {
			return refuse("%s (offset %d): property names are case-sensitive; did you mean %s?", root, pos, r)
		}
	}
	for _, r := range []string{"tags", "properties", "capabilities"} {
		if strings.EqualFold(r, root) {
			return refuse("%s (offset %d): property names are case-sensitive; did you mean %s?", root, pos, r)
		}
	}
	return refuse("%s (offset %d) is not a property of a device twin", root, pos)
}

func (p *parser) enter() error {
	if p.depth++; p.depth > maxDepth {
		return refuse("the condition is nested more than %d levels deep", maxDepth)
	}
	return nil
}

func (p *parser) or() (cond, error) {
	c, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.acceptKeyword("or") {
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		c = orCond{c, r}
	}
	return c, nil
}

func (p *parser) and() (cond, error) {
	c, err := p.not()
	if err != nil {
		return nil, err
	}
	for p.acceptKeyword("and") {
		r, err := p.not()
		if err != nil {
			return nil, err
		}
		c = andCond{c, r}
	}
	return c, nil
}

func (p *parser) not() (cond, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	if p.acceptKeyword("not") {
		c, err := p.not()
		if err != nil {
			return nil, err
		}
		return notCond{c}, nil
	}
	return p.primary()
}

func (p *parser) primary() (cond, error) {
	if p.acceptPunct("(") {
		c, err := p.or()
		if err != nil {
			return nil, err
		}
		return c, p.expectPunct(")", "')'")
	}
	t := p.peek()
	if t.kind == tokIdent && p.toks[p.i+1].kind == tokPunct && p.toks[p.i+1].text == "(" {
		if !strings.EqualFold(t.text, "is_defined") {
			return nil, refuse("function %s (offset %d) is not supported; twin queries support only IS_DEFINED", t.text, t.pos)
		}
		p.i += 2
		pa, err := p.path()
		if err != nil {
			return nil, err
		}
		return definedCond{pa}, p.expectPunct(")", "')' after IS_DEFINED's property")
	}
	left, err := p.operand()
	if err != nil {
		return nil, err
	}
	op := p.peek()
	switch {
	case keyword(op, "in") || keyword(op, "nin"):
		p.i++
		if left.isLit {
			return nil, refuse("%s at offset %d needs a property on its left", strings.ToUpper(op.text), op.pos)
		}
		list, err := p.list()
		if err != nil {
			return nil, err
		}
		var c cond = inCond{left.path, list}
		if keyword(op, "nin") {
			c = notCond{c}
		}
		return c, nil
	case op.kind == tokOp:
		p.i++
		right, err := p.operand()
		if err != nil {
			return nil, err
		}
		o := op.text
		if o == "<>" {
			o = "!="
		}
		if o != "=" && o != "!=" {
			for _, x := range []operand{left, right} {
				if x.isLit && (x.lit.kind == valBool || x.lit.kind == valNull) {
					return nil, refuse("%s at offset %d compares only numbers and strings, not %s", op.text, op.pos, x.lit)
				}
			}
			if !left.isLit && !right.isLit {
				return nil, refuse("%s at offset %d between two properties is not supported; compare a property with a number or a string", op.text, op.pos)
			}
		}
		return cmpCond{o, left, right}, nil
	case keyword(op, "is") || keyword(op, "like") || keyword(op, "between"):
		return nil, refuse("%s (offset %d) is not supported; use =, !=, <, >, <=, >=, IN, NIN or IS_DEFINED", strings.ToUpper(op.text), op.pos)
	case op.kind == tokPunct && (op.text == "*" || op.text == "."):
		return nil, refuse("'%s' at offset %d: arithmetic is not supported", op.text, op.pos)
	case op.kind == tokNumber && (op.text[0] == '-' || op.text[0] == '+'):
		return nil, refuse("'%c' at offset %d: arithmetic is not supported", op.text[0], op.pos)
	}
	return nil, p.unexpected("a comparison (=, !=, <>, <, >, <=, >=, IN, NIN) after " + left.String())
}

func (p *parser) operand() (operand, error) {
	t := p.peek()
	switch {
	case t.kind == tokString:
		p.i++
		return operand{isLit: true, lit: value{kind: valString, s: t.text}}, nil
	case t.kind == tokNumber:
		p.i++
		f, _ := strconv.ParseFloat(t.text, 64) // the lexer checked it
		return operand{isLit: true, lit: value{kind: valNumber, n: f, raw: t.text}}, nil
	case keyword(t, "true"), keyword(t, "false"):
		p.i++
		return operand{isLit: true, lit: value{kind: valBool, b: keyword(t, "true")}}, nil
	case keyword(t, "null"):
		p.i++
		return operand{isLit: true, lit: value{kind: valNull}}, nil
	case keyword(t, "undefined"):
		return operand{}, refuse("undefined (offset %d) is not supported; use IS_DEFINED", t.pos)
	case t.kind == tokPunct && t.text == "[":
		return operand{}, refuse("an array (offset %d) can only follow IN or NIN", t.pos)
	}
	pa, err := p.path()
	if err != nil {
		return operand{}, err
	}
	return operand{path: pa}, nil
}

func (p *parser) list() ([]value, error) {
	if err := p.expectPunct("[", "'[' (IN and NIN take a list: IN ['a', 'b'])"); err != nil {
		return nil, err
	}
	var out []value
	for {
		o, err := p.operand()
		if err != nil {
			return nil, err
		}
		if !o.isLit {
			return nil, refuse("the list after IN/NIN holds only strings, numbers, true, false and null, not %s", o.path)
		}
		out = append(out, o.lit)
		if p.acceptPunct("]") {
			return out, nil
		}
		if err := p.expectPunct(",", "',' or ']'"); err != nil {
			return nil, err
		}
	}
}
