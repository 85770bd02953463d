package constrain

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"
)

// feed steps the machine over text and returns the state, or the offset of
// the first refused byte.
func feed(f *frame, text string) (*frame, int) {
	for i := 0; i < len(text); i++ {
		if f = step(f, text[i]); f == nil {
			return nil, i
		}
	}
	return f, -1
}

// questionsSchema is the data pipeline's question schema (data/questions.go).
const questionsSchema = `{"type":"object","properties":{"questions":{"type":"array","items":{"type":"string"}}},"required":["questions"],"additionalProperties":false}`

var schemaCases = []struct {
	name   string
	schema string // "" is json_object
	valid  []string
	// invalid texts are refused at the byte after the prefix up to "|"
	// (or, with no "|", are valid prefixes that are not whole values).
	invalid []string
}{
	{"json_object", "",
		[]string{`{}`, `{"a":1}`, `{"a": [1, 2.5e-3, "x", true, null, {"b": {}}]}`, "{\n  \"k\": \"v\\n\\u00e9\"\n}", `{"emoji":"😀"}`},
		[]string{`|[]`, `|"x"`, `{|,}`, `{"a"|}`, `{"a":|}`, `{"a":1,|}`, `{"a":tru|x}`, `{"a":0|1}`, `{"a":"x|` + "\n" + `"}`, `{"a":"\|x"}`, `{"a"`, `{"a":1`, `{"a":"\u00|g"}`, `{"a":1}| `},
	},
	{"questions", questionsSchema,
		[]string{`{"questions":[]}`, `{"questions":["What is fasting?","Why?"]}`, "{ \"questions\" : [ \"a\" ,\n \"b\" ] }"},
		[]string{`{|}`, `{"q|x":[]}`, `{"questions":|{}}`, `{"questions":[|1]}`, `{"questions":[]|,"x":1}`, `{"questions":["a"]|"`, `{"questions":["a",|]}`},
	},
	{"required and optional", `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"ok":{"type":"boolean"}},"required":["name","age"]}`,
		[]string{`{"name":"a","age":3}`, `{"age":-12,"ok":false,"name":""}`, `{"ok":true,"name":"x","age":0}`},
		[]string{`{"name":"a"|}`, `{"age":1|.5,"name":"a"}`, `{"age":1|e5}`, `{"name":"a","|name"`, `{"ok":|null}`, `{"age":0|1}`, `{"age":-|}`},
	},
	{"enum and const", `{"type":"object","properties":{"color":{"enum":["red","green","rose"]},"n":{"enum":[1,12,null]},"v":{"const":"x"}},"required":["color","n","v"]}`,
		[]string{`{"color":"rose","n":12,"v":"x"}`, `{"n":1,"v":"x","color":"red"}`, `{"n":null,"color":"green","v":"x"}`},
		[]string{`{"color":"r|x"}`, `{"color":"re|s"}`, `{"n":1|3}`, `{"n":|2}`, `{"v":"|y"}`, `{"color":"red"|}`},
	},
	{"arrays with bounds", `{"type":"array","items":{"type":"number"},"minItems":2,"maxItems":3}`,
		[]string{`[1,2]`, `[1.5,-2e10,3]`, `[ 0 , 0 ]`},
		[]string{`[1|]`, `[|]`, `[1,2,3|,4]`, `[1,2,3|,`, `[1`, `[1,2,|"x"]`},
	},
	{"nested objects and type lists", `{"type":"object","properties":{"items":{"type":"array","items":{"type":"object","properties":{"q":{"type":"string"},"tags":{"type":["array","null"],"items":{"type":"string"}}},"required":["q"],"additionalProperties":false}}},"required":["items"],"additionalProperties":false}`,
		[]string{`{"items":[{"q":"a"},{"q":"b","tags":null},{"tags":["x"],"q":"c"}]}`},
		[]string{`{"items":[{|}]}`, `{"items":[{"q":"a","tags":|"x"}]}`, `{"items":[{"q":"a",|}]}`},
	},
	{"anyOf of kinds", `{"anyOf":[{"type":"string"},{"type":"integer"},{"type":"object","properties":{"a":{"type":"null"}},"required":["a"]}]}`,
		[]string{`"x"`, `-7`, `{"a":null}`},
		[]string{`|[]`, `{|}`, `1|.5`, `|true`},
	},
	{"top-level scalars", `{"type":"number"}`,
		[]string{`0`, `-1.5E+3`, `12`},
		[]string{`|+1`, `1.|x`, `-`, `1.`, `1e+`},
	},
}

func compileCase(t *testing.T, schema string) *Schema {
	t.Helper()
	if schema == "" {
		return AnyObject()
	}
	s, err := Compile(json.RawMessage(schema))
	if err != nil {
		t.Fatalf("compile %s: %v", schema, err)
	}
	return s
}

// TestMachine checks the table: valid texts are accepted byte by byte and
// end whole and closed (numbers: whole), parse as JSON; invalid ones are
// refused exactly at the marked byte, or are not whole.
func TestMachine(t *testing.T) {
	for _, c := range schemaCases {
		t.Run(c.name, func(t *testing.T) {
			s := compileCase(t, c.schema)
			for _, text := range c.valid {
				f, at := feed(start(s.root), text)
				if at >= 0 {
					t.Errorf("valid %q refused at byte %d (%q)", text, at, text[:at+1])
					continue
				}
				if !complete(f) {
					t.Errorf("valid %q is not whole", text)
				}
				if !json.Valid([]byte(text)) {
					t.Errorf("test case %q is not JSON", text)
				}
				if closing(f) != "" {
					t.Errorf("whole %q has closing %q", text, closing(f))
				}
			}
			for _, text := range c.invalid {
				prefix, rest, marked := strings.Cut(text, "|")
				if !marked {
					f, at := feed(start(s.root), text)
					if at >= 0 || complete(f) {
						t.Errorf("incomplete %q: refused at %d, whole %v; want an accepted prefix that is not whole", text, at, at < 0 && complete(f))
					}
					continue
				}
				f, at := feed(start(s.root), prefix)
				if at >= 0 {
					t.Errorf("%q: the prefix %q is refused at byte %d", text, prefix, at)
					continue
				}
				if rest == "" {
					continue
				}
				if g := step(f, rest[0]); g != nil {
					t.Errorf("%q: byte %q after %q is accepted", text, rest[0], prefix)
				}
			}
		})
	}
}

// TestRandomWalks generates text by choosing random accepted bytes, then
// completes it with closing(): every text parses as JSON and satisfies the
// schema (checked by an independent validator below).
func TestRandomWalks(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, c := range schemaCases {
		s := compileCase(t, c.schema)
		var raw any
		if c.schema != "" {
			json.Unmarshal([]byte(c.schema), &raw)
		} else {
			raw = map[string]any{"type": "object"}
		}
		for walk := range 300 {
			f := start(s.root)
			var sb strings.Builder
			limit := r.Intn(60)
			for sb.Len() < limit && !closed(f) {
				var ok []byte
				for b := 0; b < 256; b++ {
					if step(f, byte(b)) != nil {
						ok = append(ok, byte(b))
					}
				}
				if len(ok) == 0 {
					if complete(f) {
						break // a top-level number at its length limit
					}
					t.Fatalf("%s walk %d: dead end after %q", c.name, walk, sb.String())
				}
				// Prefer structure over long strings of random bytes.
				b := ok[r.Intn(len(ok))]
				for _, p := range []byte(`{}[]",:0123456789tfn-`) {
					if step(f, p) != nil && r.Intn(3) == 0 {
						b = p
						break
					}
				}
				f = step(f, b)
				sb.WriteByte(b)
			}
			tail := closing(f)
			g, at := feed(f, tail)
			text := sb.String() + tail
			if at >= 0 || !complete(g) {
				t.Errorf("%s: closing %q of %q is refused at %d (whole %v)", c.name, tail, sb.String(), at, at < 0 && complete(g))
				continue
			}
			var v any
			if err := json.Unmarshal([]byte(text), &v); err != nil {
				t.Errorf("%s: %q is not JSON: %v", c.name, text, err)
				continue
			}
			if err := validate(raw, v, "$"); err != nil {
				t.Errorf("%s: %q: %v", c.name, text, err)
			}
		}
	}
}

// validate checks v against the supported subset of JSON Schema, written
// from the specification (independently of the machine).
func validate(schema, v any, path string) error {
	sm, _ := schema.(map[string]any)
	if e, ok := sm["enum"]; ok {
		for _, x := range e.([]any) {
			if fmt.Sprint(x) == fmt.Sprint(v) {
				return nil
			}
		}
		return fmt.Errorf("%s: %v not in enum %v", path, v, e)
	}
	if cst, ok := sm["const"]; ok {
		if fmt.Sprint(cst) != fmt.Sprint(v) {
			return fmt.Errorf("%s: %v is not the const %v", path, v, cst)
		}
		return nil
	}
	if alts, ok := sm["anyOf"]; ok {
		for _, a := range alts.([]any) {
			if validate(a, v, path) == nil {
				return nil
			}
		}
		return fmt.Errorf("%s: %v matches no anyOf branch", path, v)
	}
	var types []string
	switch tv := sm["type"].(type) {
	case string:
		types = []string{tv}
	case []any:
		for _, x := range tv {
			types = append(types, x.(string))
		}
	}
	if len(types) == 0 {
		return nil
	}
	var errs []string
	for _, ty := range types {
		err := validateType(sm, ty, v, path)
		if err == nil {
			return nil
		}
		errs = append(errs, err.Error())
	}
	return fmt.Errorf("%s", strings.Join(errs, "; "))
}

func validateType(sm map[string]any, ty string, v any, path string) error {
	switch ty {
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%s: %v is not a string", path, v)
		}
	case "number":
		if _, ok := v.(float64); !ok {
			return fmt.Errorf("%s: %v is not a number", path, v)
		}
	case "integer":
		if f, ok := v.(float64); !ok || f != math.Trunc(f) {
			return fmt.Errorf("%s: %v is not an integer", path, v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: %v is not a boolean", path, v)
		}
	case "null":
		if v != nil {
			return fmt.Errorf("%s: %v is not null", path, v)
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: %v is not an array", path, v)
		}
		if m, ok := sm["minItems"].(float64); ok && float64(len(a)) < m {
			return fmt.Errorf("%s: %d items, fewer than %v", path, len(a), m)
		}
		if m, ok := sm["maxItems"].(float64); ok && float64(len(a)) > m {
			return fmt.Errorf("%s: %d items, more than %v", path, len(a), m)
		}
		for i, x := range a {
			if err := validate(sm["items"], x, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case "object":
		o, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %v is not an object", path, v)
		}
		props, _ := sm["properties"].(map[string]any)
		for _, r := range asList(sm["required"]) {
			if _, ok := o[r.(string)]; !ok {
				return fmt.Errorf("%s: required %q missing", path, r)
			}
		}
		for k, x := range o {
			ps, ok := props[k]
			if !ok {
				if ap, ok := sm["additionalProperties"].(bool); ok && !ap {
					return fmt.Errorf("%s: property %q not allowed", path, k)
				}
				continue
			}
			if err := validate(ps, x, path+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestCompileErrors checks that unsupported and malformed schemas are
// refused with the keyword and place named.
func TestCompileErrors(t *testing.T) {
	for _, c := range []struct{ schema, want string }{
		{`{"type":"string","pattern":"^a"}`, `keyword "pattern" is not supported for type string`},
		{`{"type":"string","minLength":3}`, `keyword "minLength" is not supported`},
		{`{"type":"object","properties":{"a":{"type":"integer","minimum":0}}}`, `schema at $.properties.a: keyword "minimum"`},
		{`{"$ref":"#/$defs/x"}`, `keyword "$ref" without a type is not supported`},
		{`{"type":"object","properties":{"a":{"type":"string"}},"required":["b"]}`, `required property "b" is not in properties`},
		{`{"type":"object","additionalProperties":{"type":"string"}}`, "additionalProperties must be true or false"},
		{`{"type":"array","minItems":3,"maxItems":2}`, "minItems 3 is above maxItems 2"},
		{`{"type":"array","items":{"type":"strin"}}`, `schema at $.items: unknown type "strin"`},
		{`{"anyOf":[{"type":"string"},{"enum":["a"]}]}`, "alternatives 0 and 1 can both start with"},
		{`{"oneOf":[{"type":"string"}]}`, `keyword "oneOf" without a type`},
		{`{"enum":[]}`, "enum must be a non-empty list"},
		{`[1]`, "schema at $ must be an object"},
		{`{"type":`, "schema is not valid JSON"},
		{`false`, "no value matches it"},
	} {
		_, err := Compile(json.RawMessage(c.schema))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.schema, err, c.want)
		}
	}
}
