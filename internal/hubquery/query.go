package hubquery

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// Select is what a query returns per device, or for all of them.
type Select int

const (
	// SelectTwins: SELECT * — the matching devices' twins.
	SelectTwins Select = iota
	// SelectProjection: SELECT path [AS name], … — one object per
	// matching device with the named values.
	SelectProjection
	// SelectCount: SELECT COUNT() [AS name] — one object with the number
	// of matching devices.
	SelectCount
)

// Query is a parsed query. It is immutable and safe for concurrent use.
type Query struct {
	kind      Select
	where     cond // nil: every device
	proj      []projection
	countName string
}

type projection struct {
	path path
	name string
}

// Select returns what the query selects.
func (q *Query) Select() Select { return q.kind }

// ItemType is the query's x-ms-item-type: Twin for SELECT *, Raw for
// projections and aggregates.
func (q *Query) ItemType() string {
	if q.kind == SelectTwins {
		return "Twin"
	}
	return "Raw"
}

// Uses reports whether the query's WHERE clause or projections read the
// twin member root (tags, properties, deviceId, …): a caller may leave
// the others out of the documents it passes to Match and Project.
func (q *Query) Uses(root string) bool {
	found := false
	for _, p := range q.proj {
		found = found || p.path.segs[0] == root
	}
	if q.where != nil {
		q.where.paths(func(p path) { found = found || p.segs[0] == root })
	}
	return found
}

// Match reports whether a device's twin document (the service twin JSON
// decoded into map[string]any, numbers as json.Number or float64)
// satisfies the WHERE clause. A condition that is undefined (a missing
// property, values of different types) does not match, and neither does
// its negation, as in IoT Hub.
func (q *Query) Match(doc map[string]any) bool {
	return q.where == nil || q.where.eval(doc) == tvTrue
}

// Project returns a matching device's row of a projection query: an
// object with each projection's value under its name, in the SELECT's
// order, leaving out the projections the twin has no value for.
func (q *Query) Project(doc map[string]any) json.RawMessage {
	b := []byte{'{'}
	first := true
	for _, p := range q.proj {
		v, ok := p.path.lookup(doc)
		if !ok {
			continue
		}
		val, err := json.Marshal(v)
		if err != nil {
			continue // not JSON-shaped: the document came from JSON
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		name, _ := json.Marshal(p.name)
		b = append(append(append(b, name...), ':'), val...)
	}
	return append(b, '}')
}

// CountRow is the row of a COUNT() query: {"<name>":n}, the name
// numberOfDevices unless the query gave one with AS.
func (q *Query) CountRow(n int) json.RawMessage {
	name, _ := json.Marshal(q.countName)
	return json.RawMessage(`{` + string(name) + `:` + strconv.Itoa(n) + `}`)
}

// path is a property path: deviceId, tags.location.region, …
type path struct{ segs []string }

func (p path) String() string { return strings.Join(p.segs, ".") }

// lookup follows the path into doc; ok is false when a member is missing
// or a step is not an object.
func (p path) lookup(doc map[string]any) (any, bool) {
	var cur any = doc
	for _, s := range p.segs {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[s]; !ok {
			return nil, false
		}
	}
	return cur, true
}

type valKind int

const (
	valUndefined valKind = iota
	valNull
	valBool
	valNumber
	valString
	valOther // an object or an array: not comparable
)

type value struct {
	kind valKind
	b    bool
	n    float64
	s    string
	raw  string // a number literal as written
}

func (v value) String() string {
	switch v.kind {
	case valNull:
		return "null"
	case valBool:
		return strconv.FormatBool(v.b)
	case valNumber:
		return v.raw
	case valString:
		return quote(v.s)
	}
	return "a value"
}

// valueOf classifies a decoded JSON value.
func valueOf(x any) value {
	switch x := x.(type) {
	case nil:
		return value{kind: valNull}
	case bool:
		return value{kind: valBool, b: x}
	case string:
		return value{kind: valString, s: x}
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil && !math.IsInf(f, 0) {
			return value{kind: valOther}
		}
		return value{kind: valNumber, n: f}
	case float64:
		return value{kind: valNumber, n: x}
	case int64:
		return value{kind: valNumber, n: float64(x)}
	case int:
		return value{kind: valNumber, n: float64(x)}
	}
	return value{kind: valOther}
}

type operand struct {
	isLit bool
	lit   value
	path  path
}

func (o operand) String() string {
	if o.isLit {
		return o.lit.String()
	}
	return o.path.String()
}

func (o operand) eval(doc map[string]any) value {
	if o.isLit {
		return o.lit
	}
	x, ok := o.path.lookup(doc)
	if !ok {
		return value{}
	}
	return valueOf(x)
}

// tv is a truth value of the query language: a comparison of a missing
// property, or of values of different types, is undefined.
type tv int8

const (
	tvFalse tv = iota
	tvTrue
	tvUndefined
)

func truth(b bool) tv {
	if b {
		return tvTrue
	}
	return tvFalse
}

type cond interface {
	eval(doc map[string]any) tv
	paths(func(path))
}

type andCond struct{ l, r cond }

func (c andCond) eval(doc map[string]any) tv {
	l := c.l.eval(doc)
	if l == tvFalse {
		return tvFalse
	}
	r := c.r.eval(doc)
	switch {
	case r == tvFalse:
		return tvFalse
	case l == tvTrue && r == tvTrue:
		return tvTrue
	}
	return tvUndefined
}

func (c andCond) paths(f func(path)) { c.l.paths(f); c.r.paths(f) }

type orCond struct{ l, r cond }

func (c orCond) eval(doc map[string]any) tv {
	l := c.l.eval(doc)
	if l == tvTrue {
		return tvTrue
	}
	r := c.r.eval(doc)
	switch {
	case r == tvTrue:
		return tvTrue
	case l == tvFalse && r == tvFalse:
		return tvFalse
	}
	return tvUndefined
}

func (c orCond) paths(f func(path)) { c.l.paths(f); c.r.paths(f) }

type notCond struct{ c cond }

func (c notCond) eval(doc map[string]any) tv {
	switch c.c.eval(doc) {
	case tvTrue:
		return tvFalse
	case tvFalse:
		return tvTrue
	}
	return tvUndefined
}

func (c notCond) paths(f func(path)) { c.c.paths(f) }

type definedCond struct{ p path }

func (c definedCond) eval(doc map[string]any) tv {
	_, ok := c.p.lookup(doc)
	return truth(ok)
}

func (c definedCond) paths(f func(path)) { f(c.p) }

type cmpCond struct {
	op   string // = != < > <= >=
	l, r operand
}

func (c cmpCond) eval(doc map[string]any) tv { return compare(c.op, c.l.eval(doc), c.r.eval(doc)) }

func (c cmpCond) paths(f func(path)) {
	for _, o := range []operand{c.l, c.r} {
		if !o.isLit {
			f(o.path)
		}
	}
}

// compare applies op to two primitive values of the same type; anything
// else (a missing value, an object, different types) is undefined.
func compare(op string, a, b value) tv {
	if a.kind != b.kind || a.kind == valUndefined || a.kind == valOther {
		return tvUndefined
	}
	c := 0
	switch a.kind {
	case valNull:
	case valBool:
		if a.b != b.b {
			c = 1 // only = and != reach here with booleans
		}
	case valNumber:
		switch {
		case a.n < b.n:
			c = -1
		case a.n > b.n:
			c = 1
		}
	case valString:
		c = strings.Compare(a.s, b.s)
	}
	if (a.kind == valNull || a.kind == valBool) && op != "=" && op != "!=" {
		return tvUndefined // two properties holding booleans or nulls: not ordered
	}
	switch op {
	case "=":
		return truth(c == 0)
	case "!=":
		return truth(c != 0)
	case "<":
		return truth(c < 0)
	case "<=":
		return truth(c <= 0)
	case ">":
		return truth(c > 0)
	}
	return truth(c >= 0) // >=
}

type inCond struct {
	p    path
	list []value
}

// eval is the OR of p = each value of the list.
func (c inCond) eval(doc map[string]any) tv {
	x, ok := c.p.lookup(doc)
	if !ok {
		return tvUndefined
	}
	v := valueOf(x)
	out := tvFalse
	for _, l := range c.list {
		switch compare("=", v, l) {
		case tvTrue:
			return tvTrue
		case tvUndefined:
			out = tvUndefined
		}
	}
	return out
}

func (c inCond) paths(f func(path)) { f(c.p) }
