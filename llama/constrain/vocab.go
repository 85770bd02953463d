package constrain

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"sync"
)

// Vocab is a byte trie over a tokenizer's vocabulary: each node is a byte
// string, and the tokens whose bytes are that string hang on it. The set
// of tokens the machine accepts from a state is found by walking the trie
// and stepping the machine one byte per edge, never entering a branch whose
// first byte the machine refuses: the cost is the number of accepted
// prefixes, not the vocabulary size times the token length. Masks are
// cached per (schema, machine state), so a string that goes on for many
// tokens costs one walk.
type Vocab struct {
	pieces [][]byte
	// The trie, children of a node contiguous: node i's edges are
	// edgeByte/edgeNode[first[i]:first[i+1]], its tokens
	// tokens[tokFirst[i]:tokFirst[i+1]].
	first, tokFirst []int32
	edgeByte        []byte
	edgeNode        []int32
	tokens          []int32
	nodes           int

	mu      sync.Mutex
	schemas map[string]*Schema // compiled schemas by their text
}

// NewVocab builds the trie of a vocabulary: pieces[id] is the bytes of
// token id, nil or empty for tokens that must never be generated inside the
// constrained text (special tokens).
func NewVocab(pieces [][]byte) *Vocab {
	type tnode struct {
		kids   map[byte]*tnode
		tokens []int32
	}
	root := &tnode{}
	for id, p := range pieces {
		if len(p) == 0 {
			continue
		}
		n := root
		for _, b := range p {
			if n.kids == nil {
				n.kids = map[byte]*tnode{}
			}
			c := n.kids[b]
			if c == nil {
				c = &tnode{}
				n.kids[b] = c
			}
			n = c
		}
		n.tokens = append(n.tokens, int32(id))
	}
	v := &Vocab{pieces: pieces, schemas: map[string]*Schema{}}
	// Breadth first, so that each node's children get consecutive indexes.
	queue := []*tnode{root}
	for i := 0; i < len(queue); i++ {
		n := queue[i]
		v.first = append(v.first, int32(len(v.edgeByte)))
		v.tokFirst = append(v.tokFirst, int32(len(v.tokens)))
		v.tokens = append(v.tokens, n.tokens...)
		bs := make([]int, 0, len(n.kids))
		for b := range n.kids {
			bs = append(bs, int(b))
		}
		sort.Ints(bs)
		for _, b := range bs {
			v.edgeByte = append(v.edgeByte, byte(b))
			v.edgeNode = append(v.edgeNode, int32(len(queue)))
			queue = append(queue, n.kids[byte(b)])
		}
	}
	v.first = append(v.first, int32(len(v.edgeByte)))
	v.tokFirst = append(v.tokFirst, int32(len(v.tokens)))
	v.nodes = len(queue)
	return v
}

// Size is the number of token ids the vocabulary covers.
func (v *Vocab) Size() int { return len(v.pieces) }

// Nodes is the number of trie nodes.
func (v *Vocab) Nodes() int { return v.nodes }

// maxCachedSchemas bounds the compiled schemas a Vocab keeps.
const maxCachedSchemas = 64

// Schema compiles a JSON schema, or returns the one compiled before from
// the same text (with its mask cache).
func (v *Vocab) Schema(raw json.RawMessage) (*Schema, error) {
	k := string(raw)
	v.mu.Lock()
	s := v.schemas[k]
	v.mu.Unlock()
	if s != nil {
		return s, nil
	}
	s, err := Compile(raw)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if len(v.schemas) >= maxCachedSchemas {
		clear(v.schemas)
	}
	v.schemas[k] = s
	v.mu.Unlock()
	return s, nil
}

// JSON returns a constraint to JSON matching schema, or to any JSON object
// when schema is empty (response_format json_object).
func (v *Vocab) JSON(schema json.RawMessage) (*Constraint, error) {
	if len(schema) == 0 {
		v.mu.Lock()
		s := v.schemas[""]
		if s == nil {
			s = AnyObject()
			v.schemas[""] = s
		}
		v.mu.Unlock()
		return v.New(s), nil
	}
	s, err := v.Schema(schema)
	if err != nil {
		return nil, err
	}
	return v.New(s), nil
}

// allowedBits returns the bitset (over token ids) of the tokens f accepts.
func (v *Vocab) allowedBits(f *frame) []uint64 {
	mask := make([]uint64, (len(v.pieces)+63)/64)
	v.walk(0, f, mask)
	return mask
}

func (v *Vocab) walk(n int32, f *frame, mask []uint64) {
	for e := v.first[n]; e < v.first[n+1]; e++ {
		g := step(f, v.edgeByte[e])
		if g == nil {
			continue
		}
		c := v.edgeNode[e]
		for _, id := range v.tokens[v.tokFirst[c]:v.tokFirst[c+1]] {
			mask[id>>6] |= 1 << (id & 63)
		}
		if v.first[c] < v.first[c+1] {
			v.walk(c, g, mask)
		}
	}
}

// prefixTokens marks the tokens whose bytes are a non-empty prefix of text.
func (v *Vocab) prefixTokens(text string, allowed []bool) {
	n := int32(0)
	for i := 0; i < len(text); i++ {
		next := int32(-1)
		for e := v.first[n]; e < v.first[n+1]; e++ {
			if v.edgeByte[e] == text[i] {
				next = v.edgeNode[e]
				break
			}
		}
		if next < 0 {
			return
		}
		n = next
		for _, id := range v.tokens[v.tokFirst[n]:v.tokFirst[n+1]] {
			if int(id) < len(allowed) {
				allowed[id] = true
			}
		}
	}
}

// maxCachedMasks bounds the masks a schema keeps.
const maxCachedMasks = 512

// Constraint is the state of one constrained generation; it implements
// llama.TokenConstraint. It is used from one goroutine at a time.
type Constraint struct {
	v      *Vocab
	s      *Schema
	state  *frame
	forced bool
	key    []byte
}

// New starts a constraint to s.
func (v *Vocab) New(s *Schema) *Constraint {
	return &Constraint{v: v, s: s, state: start(s.root)}
}

// Allow marks the tokens that keep the output a valid prefix. Near the
// token limit, it also keeps the output finishable: when the remaining
// tokens come within budgetZone of the shortest completion, only tokens
// after which the shortest completion still fits in the tokens left are
// allowed, and when it only just fits, only the tokens that spell it. So
// the output is whole JSON when the limit comes (Forced then reports that
// the limit steered it).
func (c *Constraint) Allow(allowed []bool, remaining int) {
	if closed(c.state) {
		return
	}
	tail := closing(c.state)
	switch {
	case remaining <= len(tail):
		c.forced = true
		c.v.prefixTokens(tail, allowed)
		return
	case remaining <= len(tail)+budgetZone:
		w := budgetWalk{from: c.state, left: remaining - 1, allowed: allowed, base: -1}
		if c.state.kind == fString {
			// Tokens that stay inside this string change only the string's
			// own ending: the rest of the completion is the same.
			w.base = len(tail) - stringTail(c.state)
		}
		if c.v.walkBudget(0, c.state, &w); w.refused {
			c.forced = true
		}
		return
	}
	c.key = key(c.state, c.key[:0])
	mask := c.s.mask(string(c.key), func() []uint64 { return c.v.allowedBits(c.state) })
	for w, word := range mask {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			if id := w*64 + b; id < len(allowed) {
				allowed[id] = true
			}
			word &= word - 1
		}
	}
}

// budgetZone is how many tokens before the shortest completion stops
// fitting the token limit the mask starts to check that each token leaves
// room for it. It covers what one token can add to the completion (a
// bracket, a comma and a key, an object's required properties).
const budgetZone = 32

// budgetWalk is the state of a walk for the last tokens before the limit.
type budgetWalk struct {
	from    *frame
	left    int // bytes the completion may take after the token
	base    int // when from is a string: the completion after it, else -1
	allowed []bool
	refused bool // a token the machine accepts did not fit
}

// walkBudget is walk for the last tokens before the limit: a token is
// allowed when the machine accepts it and the shortest completion after it
// has at most w.left bytes (each byte is at most one token).
func (v *Vocab) walkBudget(n int32, f *frame, w *budgetWalk) {
	for e := v.first[n]; e < v.first[n+1]; e++ {
		g := step(f, v.edgeByte[e])
		if g == nil {
			continue
		}
		c := v.edgeNode[e]
		if ids := v.tokens[v.tokFirst[c]:v.tokFirst[c+1]]; len(ids) > 0 {
			var need int
			if w.base >= 0 && g.kind == fString && g.parent == w.from.parent {
				need = w.base + stringTail(g)
			} else {
				need = len(closing(g))
			}
			fits := need <= w.left
			for _, id := range ids {
				if fits && int(id) < len(w.allowed) {
					w.allowed[id] = true
				}
			}
			w.refused = w.refused || !fits
		}
		if v.first[c] < v.first[c+1] {
			v.walkBudget(c, g, w)
		}
	}
}

// Accept advances over a generated token.
func (c *Constraint) Accept(id int32) error {
	if id < 0 || int(id) >= len(c.v.pieces) || len(c.v.pieces[id]) == 0 {
		return fmt.Errorf("token %d cannot appear in constrained output", id)
	}
	f := c.state
	for i, b := range c.v.pieces[id] {
		if f = step(f, b); f == nil {
			return fmt.Errorf("token %d (%q) breaks the JSON at its byte %d", id, c.v.pieces[id], i)
		}
	}
	c.state = f
	return nil
}

// Complete reports whether the output is a whole JSON value.
func (c *Constraint) Complete() bool { return complete(c.state) }

// Closed reports whether nothing may follow the output.
func (c *Constraint) Closed() bool { return closed(c.state) }

// Forced reports whether the token limit forced the shortest completion.
func (c *Constraint) Forced() bool { return c.forced }

// mask returns the cached mask of a state, computing it on a miss.
func (s *Schema) mask(key string, compute func() []uint64) []uint64 {
	s.mu.Lock()
	m, ok := s.masks[key]
	s.mu.Unlock()
	if ok {
		return m
	}
	m = compute()
	s.mu.Lock()
	if s.masks == nil || len(s.masks) >= maxCachedMasks {
		s.masks = map[string][]uint64{}
	}
	s.masks[key] = m
	s.mu.Unlock()
	return m
}

// ErrNotByteLevel is returned for tokenizers whose tokens are not byte
// strings.
var ErrNotByteLevel = errors.New("constrained decoding needs a byte-level BPE tokenizer (such as Llama 3's or SmolLM2's)")
