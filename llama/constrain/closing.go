package constrain

import (
	"encoding/binary"
	"strings"
)

// What a state lacks to be whole (the shortest completion, used near the
// token limit), and the key that identifies a state for the mask cache.

// endable reports whether f can end without another byte (a number or a
// literal whose text is whole).
func endable(f *frame) bool {
	switch f.kind {
	case fNumber:
		return numberFinal(f.state)
	case fLiteral:
		return matched(f) >= 0
	}
	return false
}

// complete reports whether the output so far is a whole JSON value.
func complete(f *frame) bool {
	if f.kind == fRoot {
		return f.state == rootDone
	}
	return endable(f) && f.parent.kind == fRoot
}

// closed reports whether nothing may follow.
func closed(f *frame) bool { return f.kind == fRoot && f.state == rootDone }

// closing returns the shortest text that completes the output from f.
func closing(f *frame) string {
	var sb strings.Builder
	for f != nil && !closed(f) {
		var next *frame
		switch f.kind {
		case fRoot:
			sb.WriteString(f.node.minText)
			return sb.String()
		case fValue:
			sb.WriteString(f.node.minText)
			next = done(f)
		case fString:
			switch {
			case f.need > 0:
				sb.WriteByte(f.lo)
				for range int(f.need) - 1 {
					sb.WriteByte(0x80)
				}
			case f.state == sEscape:
				sb.WriteByte('n')
			case f.state == sUnicode:
				sb.WriteString(strings.Repeat("0", 4-int(f.n)))
			}
			sb.WriteByte('"')
			next = done(f)
		case fNumber:
			if !numberFinal(f.state) {
				sb.WriteByte('0')
			}
			next = done(f)
		case fLiteral:
			texts := f.node.literalsOf(f)
			best := -1
			for i, t := range texts {
				if f.alive&(1<<i) != 0 && (best < 0 || len(t) < len(texts[best])) {
					best = i
				}
			}
			sb.WriteString(texts[best][f.n:])
			g := *f
			g.alive, g.n = 1<<best, uint16(len(texts[best]))
			next = done(&g)
		case fObject:
			next = closeObject(f, &sb)
		case fArray:
			next = closeArray(f, &sb)
		}
		f = next
	}
	return sb.String()
}

func closeObject(f *frame, sb *strings.Builder) *frame {
	n := f.node
	switch f.state {
	case oAfterKey:
		v := anyNode
		if !n.free {
			v = n.values[f.key]
		}
		sb.WriteString(":" + v.minText)
		g := f.with(oAfterValue)
		if g.key >= 0 {
			g.used |= 1 << g.key
		}
		return closeObject(g, sb)
	case oComma:
		// A property must follow the comma: the required ones left, or
		// the shortest unused one.
		if !f.requiredLeft() {
			best := -1
			for i := range n.keys {
				if f.used&(1<<i) == 0 && (best < 0 || len(n.keys[i])+len(n.values[i].minText) < len(n.keys[best])+len(n.values[best].minText)) {
					best = i
				}
			}
			if best < 0 { // a free object
				sb.WriteString(`"":0}`)
				return done(f)
			}
			sb.WriteString(n.keys[best] + ":" + n.values[best].minText)
			g := f.with(oAfterValue)
			g.used |= 1 << best
			return closeObject(g, sb)
		}
	}
	first := f.state == oOpen || f.state == oComma
	for i := range n.keys {
		if n.required&^f.used&(1<<i) == 0 {
			continue
		}
		if !first {
			sb.WriteByte(',')
		}
		first = false
		sb.WriteString(n.keys[i] + ":" + n.values[i].minText)
	}
	sb.WriteByte('}')
	return done(f)
}

func closeArray(f *frame, sb *strings.Builder) *frame {
	n := f.node
	count := int(f.n)
	switch f.state {
	case aComma:
		sb.WriteString(n.items.minText)
		count++
	case aOpen:
		if n.minItems > 0 {
			sb.WriteString(n.items.minText)
			count++
		}
	}
	for ; count < n.minItems; count++ {
		sb.WriteString("," + n.items.minText)
	}
	sb.WriteByte(']')
	return done(f)
}

// stringTail is the length of the shortest ending of the string frame f:
// its pending UTF-8 bytes, escape or \u digits, and the closing quote.
func stringTail(f *frame) int {
	n := 1
	switch {
	case f.need > 0:
		n += int(f.need)
	case f.state == sEscape:
		n++
	case f.state == sUnicode:
		n += 4 - int(f.n)
	}
	return n
}

// key serializes a state for the mask cache: two states with the same key
// accept the same continuations.
func key(f *frame, buf []byte) []byte {
	for ; f != nil; f = f.parent {
		buf = append(buf, byte(f.kind), f.state, f.ws, f.need, f.lo, f.hi, byte(f.key))
		buf = binary.AppendVarint(buf, int64(f.node.id))
		buf = binary.AppendUvarint(buf, uint64(f.n))
		buf = binary.AppendUvarint(buf, f.used)
		buf = binary.AppendUvarint(buf, f.alive)
	}
	return buf
}
