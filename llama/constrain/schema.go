// Package constrain restricts generation to JSON, optionally matching a
// JSON schema (constrained decoding). A schema compiles into a tree of
// nodes; a pushdown machine reads the output byte by byte and says which
// bytes may come next; a byte trie over the vocabulary turns that into the
// set of tokens that keep the output a valid prefix, walking only the
// branches the machine accepts (see vocab.go).
//
// The supported subset of JSON Schema: type (a name or a list of distinct
// kinds), properties, required, additionalProperties (false, true or
// absent), items, minItems, maxItems, enum and const, anyOf of distinct
// kinds, and the annotations title, description, default, examples,
// $schema and $id. Any other keyword is refused with an error naming it and
// its place in the schema. An object with properties produces only those
// properties; one without produces any keys with any JSON values.
package constrain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
)

type kind uint8

const (
	kindAny kind = iota // any JSON value
	kindObject
	kindArray
	kindString
	kindNumber
	kindInteger
	kindLiteral // enum, const, true, false, null
	kindUnion   // alternatives that start with different bytes
)

// maxProperties bounds the declared properties of one object (a bitmask
// tracks which are present), and the alternatives of one enum.
const maxProperties = 64

// node is one compiled schema position.
type node struct {
	id   int
	kind kind
	path string // where in the schema, for errors

	// kindObject: declared properties, or free (any keys, any values).
	keys     []string // encoded keys, "\"name\""
	values   []*node
	required uint64
	free     bool

	// kindArray
	items              *node
	minItems, maxItems int // maxItems < 0: no limit

	// kindLiteral: encoded JSON texts.
	literals []string

	// kindUnion
	alts []*node

	minText string // the shortest text of a value of this node
}

// Schema is a compiled JSON schema (or "any JSON object" for
// response_format json_object).
type Schema struct {
	root  *node
	nodes int

	mu    sync.Mutex
	masks map[string][]uint64 // allowed tokens by machine state (vocab.go)
}

var annotations = map[string]bool{"title": true, "description": true, "default": true, "examples": true,
	"$schema": true, "$id": true, "$comment": true}

var keywordsOf = map[string][]string{
	"object":  {"properties", "required", "additionalProperties"},
	"array":   {"items", "minItems", "maxItems"},
	"string":  {},
	"number":  {},
	"integer": {},
	"boolean": {},
	"null":    {},
}

// AnyObject is the schema of response_format json_object: any JSON object.
func AnyObject() *Schema {
	c := &compiler{}
	n := c.newNode(kindObject, "$")
	n.free = true
	n.minText = "{}"
	return &Schema{root: n, nodes: c.n}
}

// Compile compiles a JSON schema. Unsupported keywords and malformed
// schemas are errors that name the keyword and where it is.
func Compile(raw json.RawMessage) (*Schema, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("schema is not valid JSON: %w", err)
	}
	c := &compiler{}
	n, err := c.compile(v, "$")
	if err != nil {
		return nil, err
	}
	return &Schema{root: n, nodes: c.n}, nil
}

type compiler struct{ n int }

func (c *compiler) newNode(k kind, path string) *node {
	c.n++
	return &node{id: c.n, kind: k, path: path, maxItems: -1}
}

func (c *compiler) compile(v any, path string) (*node, error) {
	if b, ok := v.(bool); ok {
		if !b {
			return nil, fmt.Errorf("schema at %s is false: no value matches it", path)
		}
		return c.any(path), nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("schema at %s must be an object, got %s", path, jsonKind(v))
	}
	if e, ok := obj["enum"]; ok {
		return c.enum(obj, e, path, "enum")
	}
	if e, ok := obj["const"]; ok {
		return c.enum(obj, []any{e}, path, "const")
	}
	if alts, ok := obj["anyOf"]; ok {
		return c.anyOf(obj, alts, path)
	}
	t, hasType := obj["type"]
	if !hasType {
		for k := range obj {
			if !annotations[k] {
				return nil, fmt.Errorf("schema at %s: keyword %q without a type is not supported", path, k)
			}
		}
		return c.any(path), nil
	}
	switch t := t.(type) {
	case string:
		return c.typed(obj, t, path)
	case []any:
		var alts []*node
		for i, tv := range t {
			name, ok := tv.(string)
			if !ok {
				return nil, fmt.Errorf("schema at %s: type[%d] is not a string", path, i)
			}
			n, err := c.typed(obj, name, path)
			if err != nil {
				return nil, err
			}
			alts = append(alts, n)
		}
		return c.union(alts, path)
	}
	return nil, fmt.Errorf("schema at %s: type must be a string or a list of strings", path)
}

func (c *compiler) any(path string) *node {
	n := c.newNode(kindAny, path)
	n.minText = "0"
	return n
}

// typed compiles a schema of one type; keywords that belong to another
// type, or that are not supported, are errors.
func (c *compiler) typed(obj map[string]any, t, path string) (*node, error) {
	allowed, ok := keywordsOf[t]
	if !ok {
		return nil, fmt.Errorf("schema at %s: unknown type %q", path, t)
	}
	for k := range obj {
		if k == "type" || annotations[k] || contains(allowed, k) {
			continue
		}
		if owner := ownerOf(k); owner != "" && owner != t && len(asList(obj["type"])) > 1 {
			continue // a keyword of another type of the list
		}
		return nil, fmt.Errorf("schema at %s: keyword %q is not supported for type %s (supported: type, properties, required, additionalProperties, items, minItems, maxItems, enum, const, anyOf)", path, k, t)
	}
	switch t {
	case "string":
		n := c.newNode(kindString, path)
		n.minText = `""`
		return n, nil
	case "number", "integer":
		k := kindNumber
		if t == "integer" {
			k = kindInteger
		}
		n := c.newNode(k, path)
		n.minText = "0"
		return n, nil
	case "boolean":
		return c.literal([]string{"true", "false"}, path), nil
	case "null":
		return c.literal([]string{"null"}, path), nil
	case "array":
		return c.array(obj, path)
	}
	return c.object(obj, path)
}

func ownerOf(k string) string {
	for t, ks := range keywordsOf {
		if contains(ks, k) {
			return t
		}
	}
	return ""
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (c *compiler) object(obj map[string]any, path string) (*node, error) {
	n := c.newNode(kindObject, path)
	props, _ := obj["properties"].(map[string]any)
	if p, ok := obj["properties"]; ok && props == nil {
		return nil, fmt.Errorf("schema at %s: properties must be an object, got %s", path, jsonKind(p))
	}
	switch ap := obj["additionalProperties"].(type) {
	case nil, bool:
	default:
		return nil, fmt.Errorf("schema at %s: additionalProperties must be true or false (a schema there is not supported), got %s", path, jsonKind(ap))
	}
	if len(props) > maxProperties {
		return nil, fmt.Errorf("schema at %s: %d properties; at most %d are supported", path, len(props), maxProperties)
	}
	names := slices.Sorted(maps.Keys(props)) // deterministic node ids; output order is the model's choice
	index := map[string]int{}
	for i, name := range names {
		key, _ := json.Marshal(name)
		v, err := c.compile(props[name], path+".properties."+name)
		if err != nil {
			return nil, err
		}
		n.keys = append(n.keys, string(key))
		n.values = append(n.values, v)
		index[name] = i
	}
	if r, ok := obj["required"]; ok {
		list, ok := r.([]any)
		if !ok {
			return nil, fmt.Errorf("schema at %s: required must be a list of property names", path)
		}
		for _, rv := range list {
			name, _ := rv.(string)
			i, ok := index[name]
			if !ok {
				return nil, fmt.Errorf("schema at %s: required property %q is not in properties", path, name)
			}
			n.required |= 1 << i
		}
	}
	if len(names) == 0 {
		if ap, ok := obj["additionalProperties"].(bool); ok && !ap {
			n.minText = "{}" // the empty object only
		} else {
			n.free = true
			n.minText = "{}"
		}
		return n, nil
	}
	var sb strings.Builder
	sb.WriteByte('{')
	first := true
	for i := range names {
		if n.required&(1<<i) == 0 {
			continue
		}
		if !first {
			sb.WriteByte(',')
		}
		first = false
		sb.WriteString(n.keys[i] + ":" + n.values[i].minText)
	}
	sb.WriteByte('}')
	n.minText = sb.String()
	return n, nil
}

func (c *compiler) array(obj map[string]any, path string) (*node, error) {
	n := c.newNode(kindArray, path)
	if it, ok := obj["items"]; ok {
		items, err := c.compile(it, path+".items")
		if err != nil {
			return nil, err
		}
		n.items = items
	} else {
		n.items = c.any(path + ".items")
	}
	for _, k := range []string{"minItems", "maxItems"} {
		v, ok := obj[k]
		if !ok {
			continue
		}
		num, ok := v.(json.Number)
		i, err := strconv.Atoi(string(num))
		if !ok || err != nil || i < 0 {
			return nil, fmt.Errorf("schema at %s: %s must be a non-negative integer", path, k)
		}
		if k == "minItems" {
			n.minItems = i
		} else {
			n.maxItems = i
		}
	}
	if n.maxItems >= 0 && n.minItems > n.maxItems {
		return nil, fmt.Errorf("schema at %s: minItems %d is above maxItems %d", path, n.minItems, n.maxItems)
	}
	items := make([]string, n.minItems)
	for i := range items {
		items[i] = n.items.minText
	}
	n.minText = "[" + strings.Join(items, ",") + "]"
	return n, nil
}

func (c *compiler) literal(texts []string, path string) *node {
	n := c.newNode(kindLiteral, path)
	n.literals = texts
	n.minText = texts[0]
	for _, t := range texts {
		if len(t) < len(n.minText) {
			n.minText = t
		}
	}
	return n
}

func (c *compiler) enum(obj map[string]any, e any, path, kw string) (*node, error) {
	for k := range obj {
		if k != kw && k != "type" && !annotations[k] {
			return nil, fmt.Errorf("schema at %s: keyword %q beside %s is not supported", path, k, kw)
		}
	}
	list, ok := e.([]any)
	if !ok || len(list) == 0 {
		return nil, fmt.Errorf("schema at %s: enum must be a non-empty list", path)
	}
	if len(list) > maxProperties {
		return nil, fmt.Errorf("schema at %s: %s has %d values; at most %d are supported", path, kw, len(list), maxProperties)
	}
	var texts []string
	for _, v := range list {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("schema at %s: %s value: %w", path, kw, err)
		}
		texts = append(texts, string(b))
	}
	return c.literal(texts, path), nil
}

func (c *compiler) anyOf(obj map[string]any, alts any, path string) (*node, error) {
	for k := range obj {
		if k != "anyOf" && !annotations[k] {
			return nil, fmt.Errorf("schema at %s: keyword %q beside anyOf is not supported", path, k)
		}
	}
	list, ok := alts.([]any)
	if !ok || len(list) == 0 {
		return nil, fmt.Errorf("schema at %s: anyOf must be a non-empty list", path)
	}
	var nodes []*node
	for i, a := range list {
		n, err := c.compile(a, fmt.Sprintf("%s.anyOf[%d]", path, i))
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
	}
	return c.union(nodes, path)
}

// union joins alternatives that a value's first byte tells apart.
func (c *compiler) union(alts []*node, path string) (*node, error) {
	if len(alts) == 1 {
		return alts[0], nil
	}
	var seen [256]int
	for i, a := range alts {
		for _, b := range firstBytes(a) {
			if j := seen[b]; j != 0 {
				return nil, fmt.Errorf("schema at %s: alternatives %d and %d can both start with %q; only alternatives of different kinds are supported", path, j-1, i, string(rune(b)))
			}
			seen[b] = i + 1
		}
	}
	n := c.newNode(kindUnion, path)
	n.alts = alts
	n.minText = alts[0].minText
	for _, a := range alts {
		if len(a.minText) < len(n.minText) {
			n.minText = a.minText
		}
	}
	return n, nil
}

// firstBytes lists the bytes a value of n may start with.
func firstBytes(n *node) []byte {
	switch n.kind {
	case kindObject:
		return []byte{'{'}
	case kindArray:
		return []byte{'['}
	case kindString:
		return []byte{'"'}
	case kindNumber, kindInteger:
		return []byte("-0123456789")
	case kindLiteral:
		var out []byte
		seen := map[byte]bool{}
		for _, t := range n.literals {
			if !seen[t[0]] {
				seen[t[0]] = true
				out = append(out, t[0])
			}
		}
		return out
	case kindUnion:
		var out []byte
		for _, a := range n.alts {
			out = append(out, firstBytes(a)...)
		}
		return out
	}
	return []byte(`{["-0123456789tfn`)
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	}
	return "an object"
}
