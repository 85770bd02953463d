package constrain

import (
	"strings"
)

// The machine reads JSON byte by byte. Its state is a stack of frames, one
// per open value, held as an immutable linked list: a step copies the top
// frame (and pops or pushes), so a state can be kept and stepped from again
// cheaply, as the vocabulary walk does at every branch of the trie.

type frameKind uint8

const (
	fRoot    frameKind = iota
	fValue             // a value is due: leading whitespace, then its first byte
	fObject            // inside {...}
	fArray             // inside [...]
	fString            // inside "..."
	fNumber            // a number
	fLiteral           // one of a set of fixed texts (keys, enums, true...)
)

// Frame states.
const (
	rootStart uint8 = iota
	rootDone
)

const (
	oOpen       uint8 = iota // after '{'
	oInKey                   // a key frame is on top
	oAfterKey                // before ':'
	oInValue                 // a value frame is on top
	oAfterValue              // before ',' or '}'
	oComma                   // after ','
)

const (
	aOpen uint8 = iota
	aInValue
	aAfterValue
	aComma
)

const (
	sNormal uint8 = iota
	sEscape
	sUnicode
)

const (
	nSign uint8 = iota // after '-'
	nZero
	nInt
	nDot
	nFrac
	nExp
	nExpSign
	nExpDigits
)

// maxWhitespace bounds a run of whitespace between tokens, so a model
// cannot loop on newlines; maxNumberLength bounds a number's length.
const (
	maxWhitespace   = 12
	maxNumberLength = 24
	// maxExponentDigits keeps numbers within float64 range, so that every
	// JSON parser reads them.
	maxExponentDigits = 2
)

type frame struct {
	parent *frame
	node   *node
	kind   frameKind
	state  uint8
	ws     uint8  // whitespace run so far
	need   uint8  // string: UTF-8 continuation bytes still due; number: exponent digits
	lo, hi uint8  // string: the range of the next continuation byte
	key    int8   // object: the property whose key or value is open (-1: free key)
	n      uint16 // array items, number length, literal position, \u digits
	used   uint64 // object: the properties present
	alive  uint64 // literal: the candidates still matching
}

// Shared nodes of free JSON (response_format json_object, untyped schemas).
var (
	anyNode       = &node{id: -1, kind: kindAny, minText: "0", maxItems: -1}
	anyObjectNode = &node{id: -2, kind: kindObject, free: true, minText: "{}", maxItems: -1}
	anyArrayNode  = &node{id: -3, kind: kindArray, items: anyNode, minText: "[]", maxItems: -1}
	anyStringNode = &node{id: -4, kind: kindString, minText: `""`, maxItems: -1}
	trueFalseNull = &node{id: -5, kind: kindLiteral, literals: []string{"true", "false", "null"}, minText: "true", maxItems: -1}
)

// start is the state before any output.
func start(root *node) *frame { return &frame{kind: fRoot, node: root} }

func isSpace(b byte) bool { return b == ' ' || b == '\n' || b == '\t' || b == '\r' }

// step feeds b; it returns the next state, or nil when b cannot come next.
func step(f *frame, b byte) *frame {
	switch f.kind {
	case fRoot:
		if f.state == rootDone {
			return nil
		}
		if isSpace(b) {
			return f.space()
		}
		return begin(f.node, &frame{kind: fRoot, node: f.node, state: rootStart}, b)
	case fValue:
		if isSpace(b) {
			return f.space()
		}
		return begin(f.node, f.parent, b)
	case fObject:
		return stepObject(f, b)
	case fArray:
		return stepArray(f, b)
	case fString:
		return stepString(f, b)
	case fNumber:
		return stepNumber(f, b)
	case fLiteral:
		return stepLiteral(f, b)
	}
	return nil
}

// space accepts one whitespace byte within the run limit.
func (f *frame) space() *frame {
	if f.ws >= maxWhitespace {
		return nil
	}
	g := *f
	g.ws++
	return &g
}

// with returns a copy of f in state s, whitespace run reset.
func (f *frame) with(s uint8) *frame {
	g := *f
	g.state, g.ws = s, 0
	return &g
}

// begin starts a value of n with its first byte b, under parent.
func begin(n *node, parent *frame, b byte) *frame {
	switch n.kind {
	case kindAny:
		switch {
		case b == '{':
			return begin(anyObjectNode, parent, b)
		case b == '[':
			return begin(anyArrayNode, parent, b)
		case b == '"':
			return begin(anyStringNode, parent, b)
		case b == '-' || (b >= '0' && b <= '9'):
			return begin(&node{id: -6, kind: kindNumber, minText: "0"}, parent, b)
		}
		return begin(trueFalseNull, parent, b)
	case kindObject:
		if b != '{' {
			return nil
		}
		return &frame{parent: parent, node: n, kind: fObject, state: oOpen, key: -1}
	case kindArray:
		if b != '[' {
			return nil
		}
		return &frame{parent: parent, node: n, kind: fArray, state: aOpen}
	case kindString:
		if b != '"' {
			return nil
		}
		return &frame{parent: parent, node: n, kind: fString}
	case kindNumber, kindInteger:
		f := &frame{parent: parent, node: n, kind: fNumber, n: 1}
		switch {
		case b == '-':
			f.state = nSign
		case b == '0':
			f.state = nZero
		case b >= '1' && b <= '9':
			f.state = nInt
		default:
			return nil
		}
		return f
	case kindLiteral:
		return literalStep(&frame{parent: parent, node: n, kind: fLiteral, alive: allOf(len(n.literals))}, n.literals, b)
	case kindUnion:
		for _, a := range n.alts {
			if strings.IndexByte(string(firstBytes(a)), b) >= 0 {
				return begin(a, parent, b)
			}
		}
	}
	return nil
}

func allOf(n int) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

// done hands a finished child to its parent and returns the parent's next
// state.
func done(child *frame) *frame {
	p := child.parent
	switch p.kind {
	case fRoot:
		return p.with(rootDone)
	case fObject:
		if p.state == oInKey {
			g := p.with(oAfterKey)
			if !p.node.free {
				g.key = int8(matched(child))
			}
			return g
		}
		g := p.with(oAfterValue)
		if g.key >= 0 {
			g.used |= 1 << g.key
		}
		return g
	case fArray:
		g := p.with(aAfterValue)
		g.n++
		return g
	}
	return nil
}

// matched is the candidate a finished literal matched.
func matched(f *frame) int {
	for i, t := range f.node.literalsOf(f) {
		if f.alive&(1<<i) != 0 && len(t) == int(f.n) {
			return i
		}
	}
	return -1
}

// literalsOf is the candidate texts of a literal frame: an object's keys
// when the literal is a key, else the node's literals.
func (n *node) literalsOf(f *frame) []string {
	if f.parent != nil && f.parent.kind == fObject && f.parent.state == oInKey {
		return f.parent.node.keys
	}
	return n.literals
}

// requiredLeft reports whether an object frame still lacks a required
// property.
func (f *frame) requiredLeft() bool { return f.node.required&^f.used != 0 }

// unusedLeft reports whether an object frame may still take a property.
func (f *frame) unusedLeft() bool {
	return f.node.free || allOf(len(f.node.keys))&^f.used != 0
}

func stepObject(f *frame, b byte) *frame {
	switch f.state {
	case oOpen, oComma:
		switch {
		case isSpace(b):
			return f.space()
		case b == '"' && f.unusedLeft():
			g := f.with(oInKey)
			if f.node.free {
				g.key = -1
				return &frame{parent: g, node: anyStringNode, kind: fString}
			}
			// A key: one of the unused properties' encoded names.
			return &frame{parent: g, node: f.node, kind: fLiteral, alive: allOf(len(f.node.keys)) &^ f.used, n: 1}
		case b == '}' && f.state == oOpen && !f.requiredLeft():
			return done(f)
		}
	case oAfterKey:
		switch {
		case isSpace(b):
			return f.space()
		case b == ':':
			g := f.with(oInValue)
			v := anyNode
			if !f.node.free {
				v = f.node.values[f.key]
			}
			return &frame{parent: g, node: v, kind: fValue}
		}
	case oAfterValue:
		switch {
		case isSpace(b):
			return f.space()
		case b == ',' && f.unusedLeft():
			return f.with(oComma)
		case b == '}' && !f.requiredLeft():
			return done(f)
		}
	}
	return nil
}

func stepArray(f *frame, b byte) *frame {
	n := f.node
	more := n.maxItems < 0 || int(f.n) < n.maxItems
	switch f.state {
	case aOpen, aComma:
		if isSpace(b) {
			return f.space()
		}
		if b == ']' && f.state == aOpen && n.minItems == 0 {
			return done(f)
		}
		if !more {
			return nil
		}
		return begin(n.items, f.with(aInValue), b)
	case aAfterValue:
		switch {
		case isSpace(b):
			return f.space()
		case b == ',' && more:
			return f.with(aComma)
		case b == ']' && int(f.n) >= n.minItems:
			return done(f)
		}
	}
	return nil
}

func stepString(f *frame, b byte) *frame {
	if f.need == 0 && f.state == sNormal && b >= 0x20 && b < 0x80 && b != '"' && b != '\\' {
		return f // plain ASCII leaves the state as it is (frames are immutable)
	}
	g := *f
	if f.need > 0 {
		if b < f.lo || b > f.hi {
			return nil
		}
		g.need--
		g.lo, g.hi = 0x80, 0xBF
		if g.need == 0 {
			g.lo, g.hi = 0, 0
		}
		return &g
	}
	switch f.state {
	case sEscape:
		switch b {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			g.state = sNormal
		case 'u':
			g.state, g.n = sUnicode, 0
		default:
			return nil
		}
		return &g
	case sUnicode:
		if !isHex(b) {
			return nil
		}
		g.n++
		if g.n == 4 {
			g.state, g.n = sNormal, 0
		}
		return &g
	}
	switch {
	case b == '"':
		return done(f)
	case b == '\\':
		g.state = sEscape
	case b < 0x20:
		return nil
	case b < 0x80:
	case b >= 0xC2 && b <= 0xDF:
		g.need, g.lo, g.hi = 1, 0x80, 0xBF
	case b == 0xE0:
		g.need, g.lo, g.hi = 2, 0xA0, 0xBF
	case (b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF:
		g.need, g.lo, g.hi = 2, 0x80, 0xBF
	case b == 0xED:
		g.need, g.lo, g.hi = 2, 0x80, 0x9F
	case b == 0xF0:
		g.need, g.lo, g.hi = 3, 0x90, 0xBF
	case b >= 0xF1 && b <= 0xF3:
		g.need, g.lo, g.hi = 3, 0x80, 0xBF
	case b == 0xF4:
		g.need, g.lo, g.hi = 3, 0x80, 0x8F
	default:
		return nil
	}
	return &g
}

func isHex(b byte) bool {
	return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F')
}

func numberFinal(s uint8) bool {
	return s == nZero || s == nInt || s == nFrac || s == nExpDigits
}

func stepNumber(f *frame, b byte) *frame {
	digit := b >= '0' && b <= '9'
	integer := f.node.kind == kindInteger
	next := uint8(255)
	switch f.state {
	case nSign:
		switch {
		case b == '0':
			next = nZero
		case digit:
			next = nInt
		}
	case nZero, nInt:
		switch {
		case digit && f.state == nInt:
			next = nInt
		case b == '.' && !integer:
			next = nDot
		case (b == 'e' || b == 'E') && !integer:
			next = nExp
		}
	case nDot, nFrac:
		switch {
		case digit:
			next = nFrac
		case (b == 'e' || b == 'E') && f.state == nFrac:
			next = nExp
		}
	case nExp:
		switch {
		case b == '+' || b == '-':
			next = nExpSign
		case digit:
			next = nExpDigits
		}
	case nExpSign, nExpDigits:
		if digit && f.need < maxExponentDigits {
			next = nExpDigits
		}
	}
	if next != 255 && f.n < maxNumberLength {
		g := *f
		g.state = next
		g.n++
		if next == nExpDigits {
			g.need++ // exponent digits
		}
		return &g
	}
	if numberFinal(f.state) {
		// The byte ends the number and belongs to the parent.
		return step(done(f), b)
	}
	return nil
}

func stepLiteral(f *frame, b byte) *frame {
	return literalStep(f, f.node.literalsOf(f), b)
}

// literalStep advances a literal frame over b (f.n bytes matched so far).
func literalStep(f *frame, texts []string, b byte) *frame {
	pos := int(f.n)
	var next uint64
	complete := false
	for i, t := range texts {
		if f.alive&(1<<i) == 0 {
			continue
		}
		if len(t) > pos && t[pos] == b {
			next |= 1 << i
		}
		if len(t) == pos {
			complete = true
		}
	}
	if next == 0 {
		if complete && pos > 0 {
			return step(done(f), b)
		}
		return nil
	}
	g := *f
	g.alive, g.n = next, uint16(pos+1)
	// Finished when a candidate is whole and none is longer.
	whole, longer := false, false
	for i, t := range texts {
		if next&(1<<i) == 0 {
			continue
		}
		if len(t) == pos+1 {
			whole = true
		} else {
			longer = true
		}
	}
	if whole && !longer {
		return done(&g)
	}
	return &g
}
