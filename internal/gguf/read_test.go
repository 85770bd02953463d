package gguf

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadSmolLM2Metadata(t *testing.T) {
	g, err := ReadInfo(asset(t, smolLM2))
	if err != nil {
		t.Fatal(err)
	}
	if g.Version != 3 {
		t.Errorf("version %d, want 3", g.Version)
	}
	arch, err := g.Architecture()
	if err != nil || arch != "llama" {
		t.Fatalf("architecture %q, %v", arch, err)
	}
	for key, want := range map[string]uint64{
		"llama.block_count":               30,
		"llama.embedding_length":          576,
		"llama.feed_forward_length":       1536,
		"llama.attention.head_count":      9,
		"llama.attention.head_count_kv":   3,
		"llama.context_length":            8192,
		"llama.rope.dimension_count":      64,
		"llama.vocab_size":                49152,
		"tokenizer.ggml.bos_token_id":     1,
		"tokenizer.ggml.eos_token_id":     2,
		"tokenizer.ggml.padding_token_id": 2,
	} {
		got, err := g.Uint(key)
		if err != nil || got != want {
			t.Errorf("%s = %d, %v; want %d", key, got, err, want)
		}
	}
	if f, err := g.Float("llama.rope.freq_base"); err != nil || f != 100000 {
		t.Errorf("rope.freq_base = %v, %v", f, err)
	}
	if f, err := g.Float("llama.attention.layer_norm_rms_epsilon"); err != nil || float32(f) != float32(1e-5) {
		t.Errorf("rms eps = %v, %v", f, err)
	}
	toks, err := g.Strings("tokenizer.ggml.tokens")
	if err != nil || len(toks) != 49152 || toks[0] != "<|endoftext|>" || toks[1] != "<|im_start|>" || toks[2] != "<|im_end|>" {
		t.Fatalf("tokens: %d %q, %v", len(toks), toks[:3], err)
	}
	merges, err := g.Strings("tokenizer.ggml.merges")
	if err != nil || len(merges) != 48900 || merges[0] != "Ġ t" {
		t.Errorf("merges: %d, %v", len(merges), err)
	}
	types, err := g.Ints("tokenizer.ggml.token_type")
	if err != nil || len(types) != 49152 || types[1] != 3 || types[1000] != 1 {
		t.Errorf("token_type: %d, %v", len(types), err)
	}
	if pre, err := g.String("tokenizer.ggml.pre"); err != nil || pre != "smollm" {
		t.Errorf("pre %q, %v", pre, err)
	}
	if addBOS, err := g.Bool("tokenizer.ggml.add_bos_token"); err != nil || addBOS {
		t.Errorf("add_bos_token %v, %v", addBOS, err)
	}
	tmpl, err := g.String("tokenizer.chat_template")
	if err != nil || !strings.Contains(tmpl, "<|im_start|>") {
		t.Errorf("chat template %q, %v", tmpl, err)
	}

	// 30 layers x 9 tensors + token_embd + output_norm (the LM head is tied).
	if len(g.Tensors) != 30*9+2 {
		t.Errorf("%d tensors", len(g.Tensors))
	}
	emb, ok := g.Tensor("token_embd.weight")
	if !ok || emb.Dims[0] != 576 || emb.Dims[1] != 49152 {
		t.Fatalf("token_embd.weight = %+v", emb)
	}
	if s := emb.Shape(); s[0] != 49152 || s[1] != 576 {
		t.Errorf("token_embd shape %v", s)
	}
	q, ok := g.Tensor("blk.0.attn_q.weight")
	if !ok || q.Type != Q4_1 || q.Size != 576*576/32*20 {
		t.Errorf("blk.0.attn_q.weight = %+v", q)
	}
	k, _ := g.Tensor("blk.0.attn_k.weight")
	if s := k.Shape(); len(s) != 2 || s[0] != 192 || s[1] != 576 {
		t.Errorf("attn_k shape %v", s)
	}
	var end int64
	for _, ti := range g.Tensors {
		if e := g.TensorDataOffset(ti) + int64(ti.Size); e > end {
			end = e
		}
	}
	if end > g.FileSize || g.FileSize-end >= int64(g.Alignment) {
		t.Errorf("tensor data ends at %d, file size %d", end, g.FileSize)
	}
}

// The small valid file the bad-input tests and the fuzz targets start from.
var (
	goodKVs = []kv{
		{"general.architecture", String("llama")},
		{"tokenizer.ggml.tokens", Strings([]string{"a", "b", "c"})},
	}
	goodTensors = []tensorSpec{{Name: "w", Type: Q8_0, Shape: []int64{4, 32}}}
)

func TestReadBadInput(t *testing.T) {
	good := encode(t, goodKVs, goodTensors)
	gi, err := Parse(bytes.NewReader(good), int64(len(good)), "good.gguf")
	if err != nil {
		t.Fatalf("good file: %v", err)
	}
	// The last tensor's data ends before the final alignment padding.
	dataEnd := int(gi.TensorDataOffset(gi.Tensors[0]) + int64(gi.Tensors[0].Size))

	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mutate := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	le := binary.LittleEndian
	// Offsets in good: magic 0, version 4, tensor count 8, kv count 16,
	// first key length 24, first key at 32 ("general.architecture", 20 bytes),
	// its type at 52, its string length at 56.
	cases := []struct {
		name string
		data []byte
		want []string
	}{
		{"empty", nil, []string{"empty.gguf", "offset 0", "truncated"}},
		{"not gguf", []byte("PK\x03\x04 this is a zip file........"), []string{"not a GGUF file", `"PK\x03\x04"`}},
		{"v1", mutate(func(b []byte) []byte { le.PutUint32(b[4:], 1); return b }), []string{"version 1 is not supported"}},
		{"big endian", mutate(func(b []byte) []byte { binary.BigEndian.PutUint32(b[4:], 3); return b }), []string{"big-endian"}},
		{"v9", mutate(func(b []byte) []byte { le.PutUint32(b[4:], 9); return b }), []string{"unsupported GGUF version 9"}},
		{"huge kv count", mutate(func(b []byte) []byte { le.PutUint64(b[16:], 1<<60); return b }), []string{"offset 16", "metadata count"}},
		{"huge tensor count", mutate(func(b []byte) []byte { le.PutUint64(b[8:], 1<<40); return b }), []string{"offset 8", "tensor count"}},
		{"huge key length", mutate(func(b []byte) []byte { le.PutUint64(b[24:], 1<<62); return b }), []string{"offset 24", "metadata key #0 has length 4611686018427387904"}},
		{"bad value type", mutate(func(b []byte) []byte { le.PutUint32(b[52:], 77); return b }), []string{`"general.architecture" has unknown value type 77`}},
		{"huge string", mutate(func(b []byte) []byte { le.PutUint64(b[56:], 1<<50); return b }), []string{"offset 56", `value of metadata key "general.architecture" has length`}},
		{"truncated in metadata", good[:70], []string{"offset", "truncated"}},
		{"truncated in tensor infos", good[:len(good)-150], []string{"truncated"}},
		{"truncated tensor data", good[:len(good)-40], []string{`tensor "w"`, "truncated"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := write(strings.ReplaceAll(c.name, " ", "_")+".gguf", c.data)
			if c.name == "empty" {
				path = write("empty.gguf", nil)
			}
			_, err := ReadInfo(path)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, filepath.Base(path)) {
				t.Errorf("error %q does not name the file", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}

	// Every truncation of a valid file before the end of its tensor data is
	// an error, never a panic.
	for n := 0; n < dataEnd; n++ {
		if _, err := Parse(bytes.NewReader(good[:n]), int64(n), "cut.gguf"); err == nil {
			t.Fatalf("truncated to %d of %d bytes: no error", n, len(good))
		}
	}
	// Corrupting any single header byte never panics.
	hdr := len(good) - 128
	for i := 0; i < hdr; i++ {
		for _, v := range []byte{0xff, 0x00, 0x7f} {
			b := append([]byte(nil), good...)
			b[i] = v
			_, _ = Parse(bytes.NewReader(b), int64(len(b)), "flip.gguf")
		}
	}

	if _, err := ReadInfo(filepath.Join(dir, "does-not-exist.gguf")); err == nil || !strings.Contains(err.Error(), "does-not-exist.gguf") {
		t.Errorf("missing file: %v", err)
	}
}
