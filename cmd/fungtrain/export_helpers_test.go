package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"testing"

	"github.com/fungtrain/fungtrain/internal/testenv"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

// Helpers of the export tests: running a GGUF file in llama.cpp (through
// llama-cpp-python, testdata/llamacpp.py) and fungtrain models at chosen
// positions, and comparing their logits.

// repoPath is a path under the repository root.
func repoPath(rel string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", rel)
}

// runPython runs a script of the test venv with a JSON request on stdin and
// decodes its JSON answer into out.
func runPython(t testing.TB, script string, req, out any) {
	t.Helper()
	in, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.Python(t), script)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\nstderr:\n%s", filepath.Base(script), err, stderr.String())
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: answer %q: %v", filepath.Base(script), b, err)
	}
}

type cppTargets struct {
	Pos []int   `json:"pos"`
	IDs []int32 `json:"ids"`
}

type cppPrompt struct {
	IDs     []int32     `json:"ids"`
	Rows    []int       `json:"rows,omitempty"`
	Out     string      `json:"out,omitempty"`
	Targets *cppTargets `json:"targets,omitempty"`
}

type cppAnswer struct {
	Logprobs [][]float64 `json:"logprobs"`
	Tokens   [][]int32   `json:"tokens"`
	Meta     struct {
		NVocab int `json:"n_vocab"`
		BOS    int `json:"bos"`
		EOS    int `json:"eos"`
	} `json:"meta"`
}

// llamaCpp runs prompts through model in llama.cpp. For prompts with Rows,
// it returns their logits (len(Rows) rows of nVocab) in rows; for prompts
// with Targets, their log-probabilities in the answer.
func llamaCpp(t testing.TB, model string, nCtx, nVocab int, kvF32 bool, prompts []cppPrompt, tokenize []string) (rows [][][]float32, ans cppAnswer) {
	t.Helper()
	dir := t.TempDir()
	for i := range prompts {
		if prompts[i].Rows != nil {
			prompts[i].Out = filepath.Join(dir, fmt.Sprintf("logits%d.f32", i))
		}
	}
	runPython(t, repoPath("cmd/fungtrain/testdata/llamacpp.py"),
		map[string]any{"model": model, "n_ctx": nCtx, "kv_f32": kvF32, "prompts": prompts, "tokenize": tokenize}, &ans)
	if ans.Meta.NVocab != nVocab {
		t.Fatalf("llama.cpp reads %d tokens from %s, want %d", ans.Meta.NVocab, model, nVocab)
	}
	for _, p := range prompts {
		if p.Rows == nil {
			rows = append(rows, nil)
			continue
		}
		b, err := os.ReadFile(p.Out)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 4*len(p.Rows)*nVocab {
			t.Fatalf("llama.cpp wrote %d bytes of logits, want %d", len(b), 4*len(p.Rows)*nVocab)
		}
		var r [][]float32
		for i := range p.Rows {
			row := make([]float32, nVocab)
			for j := range row {
				row[j] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*(i*nVocab+j):]))
			}
			r = append(r, row)
		}
		rows = append(rows, r)
	}
	return rows, ans
}

// openModel opens a model (with an adapter, if given) on the MLX thread for
// the life of the test.
func openModel(t testing.TB, path, adapter string) *llama.Bundle {
	t.Helper()
	var b *llama.Bundle
	err := mlx.Do(func() error {
		var err error
		if b, err = llama.Open(path, llama.LoadOptions{Dtype: "f32", Dequantize: "yes"}); err != nil {
			return err
		}
		if adapter != "" {
			if _, err := lora.Load(b.Model, adapter); err != nil {
				b.Close()
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mlx.Do(func() error { return b.Close() }) })
	return b
}

// modelRows returns fungtrain's float32 logits of ids at positions rows.
func modelRows(t testing.TB, m *llama.Model, ids []int32, rows []int) [][]float32 {
	t.Helper()
	var out [][]float32
	err := mlx.Do(func() error {
		s := mlx.NewScope()
		defer s.Close()
		pos := make([]int32, len(rows))
		for i, r := range rows {
			pos[i] = int32(r)
		}
		h := m.Hidden(mlx.FromInt32s(ids, 1, len(ids)), nil)
		h = mlx.Take(h, mlx.FromInt32s(pos, len(pos)), 1)
		v, err := mlx.AsType(m.Logits(h), mlx.Float32).Float32s()
		if err != nil {
			return err
		}
		n := len(v) / len(rows)
		for i := range rows {
			out = append(out, v[i*n:(i+1)*n])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// modelLogprobs returns fungtrain's log-probabilities of targets.
func modelLogprobs(t testing.TB, m *llama.Model, ids []int32, tg cppTargets) []float64 {
	t.Helper()
	rows := modelRows(t, m, ids, tg.Pos)
	out := make([]float64, len(rows))
	for i, r := range rows {
		out[i] = logSoftmaxAt(r, int(tg.IDs[i]))
	}
	return out
}

func logSoftmaxAt(row []float32, k int) float64 {
	top := math.Inf(-1)
	for _, x := range row {
		top = math.Max(top, float64(x))
	}
	var z float64
	for _, x := range row {
		z += math.Exp(float64(x) - top)
	}
	return float64(row[k]) - top - math.Log(z)
}

// logitStats compares two sets of logit rows.
type logitStats struct {
	maxAbs, meanAbs float64
	rows, top1Same  int
	// ties lists the rows whose argmax differs, with the top-2 gap of
	// each side's logits there.
	ties []string
	// maxTieGap is the largest top-2 gap (on either side) among rows whose
	// argmax differs: small means the disagreements are near ties.
	maxTieGap float64
}

func compareRows(a, b [][]float32) logitStats {
	var s logitStats
	var n int
	for i := range a {
		s.rows++
		for j := range a[i] {
			d := math.Abs(float64(a[i][j]) - float64(b[i][j]))
			s.maxAbs = math.Max(s.maxAbs, d)
			s.meanAbs += d
			n++
		}
		ia, ga := top2(a[i])
		ib, gb := top2(b[i])
		if ia == ib {
			s.top1Same++
		} else {
			s.ties = append(s.ties, fmt.Sprintf("row %d: %d vs %d (top-2 gaps %.4f, %.4f)", i, ia, ib, ga, gb))
			s.maxTieGap = math.Max(s.maxTieGap, math.Max(ga, gb))
		}
	}
	s.meanAbs /= float64(max(n, 1))
	return s
}

// top2 returns the argmax of a row and the gap between its two largest values.
func top2(row []float32) (int, float64) {
	idx := make([]int, len(row))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(i, j int) bool { return row[idx[i]] > row[idx[j]] })
	return idx[0], float64(row[idx[0]] - row[idx[1]])
}

func (s logitStats) String() string {
	return fmt.Sprintf("max |Δ| %.3g, mean |Δ| %.3g, top-1 %d/%d %v", s.maxAbs, s.meanAbs, s.top1Same, s.rows, s.ties)
}
