package llama

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/fungtrain/fungtrain/internal/testenv"
)

// The binding's offsets, converted from bytes to characters, must equal
// those of HF's Python tokenizers (which reports character offsets) for the
// same tokenizer.json and texts; so must the ids.
func TestHFBindingOffsetsMatchHFPython(t *testing.T) {
	tok := llama3Tokenizer(t)
	path := requireAsset(t, llama3TokJSON)
	texts := mixedTexts
	req, err := json.Marshal(map[string]any{"tokenizer": path, "texts": texts})
	if err != nil {
		t.Fatal(err)
	}
	script := `import json, sys
from tokenizers import Tokenizer
req = json.load(sys.stdin)
tok = Tokenizer.from_file(req["tokenizer"])
encs = [tok.encode(t, add_special_tokens=False) for t in req["texts"]]
json.dump({"ids": [e.ids for e in encs], "offsets": [e.offsets for e in encs]}, sys.stdout)`
	cmd := exec.Command(testenv.Python(t), "-c", script)
	cmd.Stdin = strings.NewReader(string(req))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("HF Python: %v", err)
	}
	var want struct {
		IDs     [][]int32  `json:"ids"`
		Offsets [][][2]int `json:"offsets"`
	}
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	for i, text := range texts {
		ids, offsets, err := tok.encodeOffsets(text)
		if err != nil {
			t.Fatalf("text %d: %v", i, err)
		}
		if !slices.Equal(ids, want.IDs[i]) {
			t.Fatalf("text %d: ids %v, HF %v", i, ids, want.IDs[i])
		}
		chars := make([][2]int, len(offsets))
		for j, o := range offsets {
			if o[0] < 0 || o[0] > o[1] || o[1] > len(text) || !utf8.ValidString(text[o[0]:o[1]]) {
				t.Fatalf("text %d token %d: byte range %v is not a span of whole characters of %q", i, j, o, text)
			}
			chars[j] = [2]int{utf8.RuneCountInString(text[:o[0]]), utf8.RuneCountInString(text[:o[1]])}
		}
		if !slices.Equal(chars, want.Offsets[i]) {
			t.Fatalf("text %d: character offsets %v, HF %v", i, chars, want.Offsets[i])
		}
	}
}

func TestHFBindingErrorsAndEdges(t *testing.T) {
	if _, err := newHFTokenizer(nil); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty config: %v", err)
	}
	_, err := newHFTokenizer([]byte(`{"model":{"type":"Nonsense"}}`))
	if err == nil || !strings.Contains(err.Error(), "Failed to create tokenizer") {
		t.Errorf("rejected config: want the library's own message, got %v", err)
	}
	tok := llama3Tokenizer(t)
	ids, offsets, err := tok.hf.encode("", false, true)
	if err != nil || len(ids) != 0 || len(offsets) != 0 {
		t.Errorf("empty text: ids %v offsets %v err %v", ids, offsets, err)
	}
	if text, ok := tok.hf.decode(nil, false); !ok || text != "" {
		t.Errorf("decode of no ids: %q %v", text, ok)
	}
	// With addSpecial, the post-processor's special tokens are added: a
	// tokenizer.json whose TemplateProcessing puts <|begin_of_text|> first
	// gives the BOS before the same ids; without, the ids alone.
	raw, err := os.ReadFile(requireAsset(t, llama3TokJSON))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["post_processor"] = map[string]any{
		"type":           "TemplateProcessing",
		"single":         []any{map[string]any{"SpecialToken": map[string]any{"id": "<|begin_of_text|>", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}},
		"pair":           []any{map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "B", "type_id": 1}}},
		"special_tokens": map[string]any{"<|begin_of_text|>": map[string]any{"id": "<|begin_of_text|>", "ids": []int{128000}, "tokens": []string{"<|begin_of_text|>"}}},
	}
	withBOS, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hf, err := newHFTokenizer(withBOS)
	if err != nil {
		t.Fatal(err)
	}
	defer hf.close()
	plain, _, _ := hf.encode("hi there", false, false)
	special, _, _ := hf.encode("hi there", true, false)
	want, _ := tok.Encode("hi there", false)
	if !slices.Equal(plain, want) || !slices.Equal(special, append([]int32{128000}, want...)) {
		t.Errorf("addSpecial: with %v, without %v; want %v after BOS 128000", special, plain, want)
	}
}

// Nothing that tokenizes or trains may pull in the network stack or the
// OpenAI client: only the dataset pipeline (data) and the CLI talk HTTP.
func TestNoNetworkInTrainingPackages(t *testing.T) {
	root := repoRoot(t)
	for _, pkg := range []string{"./llama", "./traindata", "./lora"} {
		cmd := exec.Command("go", "list", "-deps", pkg)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == "net/http" || strings.Contains(dep, "go-openai") || strings.Contains(dep, "daulet/tokenizers") {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}
