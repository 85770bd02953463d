package constrain

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/fungtrain/fungtrain/llama"
)

var smol struct {
	once   sync.Once
	pieces [][]byte
	tok    *llama.Tokenizer
	err    error
}

// smolPieces returns SmolLM2's token bytes (its GGUF tokenizer; no weights
// are loaded).
func smolPieces(t testing.TB) ([][]byte, *llama.Tokenizer) {
	t.Helper()
	smol.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		path := filepath.Join(filepath.Dir(file), "..", "..", "third_party", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
		if _, err := os.Stat(path); err != nil {
			smol.err = fmt.Errorf("test asset missing (%v): run ./build.sh setup", err)
			return
		}
		info, err := llama.ReadGGUFInfo(path)
		if err != nil {
			smol.err = err
			return
		}
		if smol.tok, err = llama.TokenizerFromGGUF(info); err != nil {
			smol.err = err
			return
		}
		smol.pieces, smol.err = smol.tok.TokenPieces()
	})
	if smol.err != nil {
		t.Fatal(smol.err)
	}
	return smol.pieces, smol.tok
}

// bruteForce lists the tokens f accepts by stepping every token's bytes.
func bruteForce(pieces [][]byte, f *frame) []bool {
	out := make([]bool, len(pieces))
	for id, p := range pieces {
		if len(p) == 0 {
			continue
		}
		g := f
		for _, b := range p {
			if g = step(g, b); g == nil {
				break
			}
		}
		out[id] = g != nil
	}
	return out
}

// TestMaskMatchesScan checks that the trie walk allows exactly the tokens a
// scan of every token's bytes allows, from states inside keys, strings
// (after an escape, inside a UTF-8 character), numbers, arrays and
// objects, on SmolLM2's vocabulary.
func TestMaskMatchesScan(t *testing.T) {
	pieces, _ := smolPieces(t)
	v := NewVocab(pieces)
	t.Logf("%d tokens, %d trie nodes", v.Size(), v.Nodes())
	for _, c := range []struct{ schema, prefix string }{
		{questionsSchema, ``},
		{questionsSchema, `{`},
		{questionsSchema, `{"ques`},
		{questionsSchema, `{"questions": [`},
		{questionsSchema, `{"questions": ["What is`},
		{questionsSchema, `{"questions": ["caf` + "\xc3"},
		{questionsSchema, `{"questions": ["a\`},
		{questionsSchema, `{"questions": ["a\u00`},
		{questionsSchema, `{"questions": ["a"]`},
		{"", `{"x": [1.5e`},
		{"", `{"x": -12`},
		{"", `{"x": {"y": tr`},
		{`{"type":"object","properties":{"n":{"enum":[1,12,"ab"]}},"required":["n"]}`, `{"n":1`},
	} {
		s := compileCase(t, c.schema)
		f, at := feed(start(s.root), c.prefix)
		if at >= 0 {
			t.Fatalf("prefix %q refused at %d", c.prefix, at)
		}
		want := bruteForce(pieces, f)
		got := make([]bool, len(pieces))
		con := &Constraint{v: v, s: s, state: f}
		con.Allow(got, 1000)
		n := 0
		for id := range got {
			if got[id] != want[id] {
				t.Errorf("after %q: token %d %q allowed %v by the trie, %v by the scan", c.prefix, id, pieces[id], got[id], want[id])
				break
			}
			if got[id] {
				n++
			}
		}
		t.Logf("after %-32q %5d tokens allowed", c.prefix, n)
	}
}

// TestRandomConstrainedGeneration plays a model that picks random allowed
// tokens under a token limit: the output is always whole JSON matching
// the schema when the constraint closes or the limit comes, however short
// the limit (if it leaves room for the shortest answer).
func TestRandomConstrainedGeneration(t *testing.T) {
	pieces, tok := smolPieces(t)
	v := NewVocab(pieces)
	r := rand.New(rand.NewSource(7))
	schemas := []string{questionsSchema, "",
		`{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"tags":{"type":"array","items":{"enum":["a","bb"]},"minItems":1}},"required":["name","age","tags"],"additionalProperties":false}`}
	for _, schema := range schemas {
		var raw any = map[string]any{"type": "object"}
		if schema != "" {
			json.Unmarshal([]byte(schema), &raw)
		}
		forced := 0
		for run := range 25 {
			con, err := v.JSON(json.RawMessage(schema))
			if err != nil {
				t.Fatal(err)
			}
			limit := len(closing(con.state)) + r.Intn(40)
			var ids []int32
			allowed := make([]bool, len(pieces))
			for len(ids) < limit && !con.Closed() {
				clear(allowed)
				con.Allow(allowed, limit-len(ids))
				var choices []int32
				for id, ok := range allowed {
					if ok {
						choices = append(choices, int32(id))
					}
				}
				if len(choices) == 0 {
					if con.Complete() {
						break
					}
					t.Fatalf("schema %s run %d: no token allowed after %q", schema, run, tok.Decode(ids))
				}
				id := choices[r.Intn(len(choices))]
				if err := con.Accept(id); err != nil {
					t.Fatalf("schema %s: accepting an allowed token: %v", schema, err)
				}
				ids = append(ids, id)
			}
			if con.Forced() {
				forced++
			}
			text := tok.Decode(ids)
			var val any
			if !con.Complete() || json.Unmarshal([]byte(text), &val) != nil {
				t.Errorf("schema %s run %d (limit %d): %q is not whole JSON", schema, run, limit, text)
				continue
			}
			if err := validate(raw, val, "$"); err != nil {
				t.Errorf("schema %s: %q: %v", schema, text, err)
			}
		}
		if forced == 0 {
			t.Errorf("schema %s: the token limit never forced a completion in 25 runs", schema)
		}
	}
}

// sampleAnswer is what a model answers to the questions schema.
const sampleAnswer = `{"questions": ["What breaks a fast, and does black coffee count?", "How does insulin resistance develop over the years?", "Can children fast safely, and from what age?", "Why does the scale go up after a day of eating salty food?"]}`

// BenchmarkMask measures the cost per generated token of constraining the
// questions schema on SmolLM2's vocabulary: Allow (the mask) and Accept
// for each token of a typical answer. "cold" compiles the schema anew each
// time (every state walks the trie once); "warm" reuses it, as a server
// does for the same schema (masks come from the cache).
func BenchmarkMask(b *testing.B) {
	pieces, tok := smolPieces(b)
	v := NewVocab(pieces)
	ids, err := tok.Encode(sampleAnswer, false)
	if err != nil {
		b.Fatal(err)
	}
	allowed := make([]bool, len(pieces))
	run := func(b *testing.B, s *Schema) {
		con := v.New(s)
		for i, id := range ids {
			clear(allowed)
			con.Allow(allowed, 1000)
			if !allowed[id] {
				b.Fatalf("token %d (%q) of the answer is not allowed", i, pieces[id])
			}
			if err := con.Accept(id); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("cold", func(b *testing.B) {
		for range b.N {
			s, _ := Compile(json.RawMessage(questionsSchema))
			run(b, s)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/token")
	})
	b.Run("warm", func(b *testing.B) {
		s, _ := Compile(json.RawMessage(questionsSchema))
		run(b, s)
		b.ResetTimer()
		for range b.N {
			run(b, s)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/token")
	})
	b.Run("walk-in-string", func(b *testing.B) {
		s, _ := Compile(json.RawMessage(questionsSchema))
		f, _ := feed(start(s.root), `{"questions": ["What`)
		for range b.N {
			v.allowedBits(f)
		}
	})
	_ = strings.TrimSpace
}
