package lora

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"testing"

	"github.com/fungtrain/fungtrain/internal/testenv"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// TestMain lets the test binary act as a training child for the resume
// test (see resume_test.go): with FUNGTRAIN_LORA_CHILD set it trains and
// exits instead of running tests.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// doMLX runs f on the MLX thread. f must report failures by returning an
// error (or t.Error), never t.Fatal: that would end the MLX thread.
func doMLX(t testing.TB, f func() error) {
	t.Helper()
	if err := mlx.Do(f); err != nil {
		t.Fatal(err)
	}
}

// Special ids of the test encoder; words hash into [firstWord, vocab).
const (
	tokBOS       = 1
	tokEOS       = 2
	tokUser      = 3
	tokAssistant = 4
	tokSystem    = 5
	tokPad       = 6
	firstWord    = 8
)

// wordEncoder is a deterministic traindata.Encoder over a small vocabulary:
// whitespace-separated words hash to ids; a chat is BOS, then per message
// a role id, its words and EOS. The assistant mask covers an assistant
// message's words and its EOS.
type wordEncoder struct{ vocab int }

func (e wordEncoder) word(w string) int32 {
	h := fnv.New32a()
	h.Write([]byte(w))
	return firstWord + int32(h.Sum32()%uint32(e.vocab-firstWord))
}

func (e wordEncoder) Encode(text string, addSpecial bool) ([]int32, error) {
	var ids []int32
	if addSpecial {
		ids = append(ids, tokBOS)
	}
	for _, w := range strings.Fields(text) {
		ids = append(ids, e.word(w))
	}
	return ids, nil
}

func (e wordEncoder) EncodeChat(msgs []llama.Message, addGen bool) ([]int32, []bool, error) {
	ids, mask := []int32{tokBOS}, []bool{false}
	for _, m := range msgs {
		role := map[string]int32{"user": tokUser, "assistant": tokAssistant, "system": tokSystem}[m.Role]
		if role == 0 {
			return nil, nil, fmt.Errorf("test encoder: role %q", m.Role)
		}
		ids, mask = append(ids, role), append(mask, false)
		words, _ := e.Encode(m.Content, false)
		for _, w := range append(words, tokEOS) {
			ids, mask = append(ids, w), append(mask, m.Role == "assistant")
		}
	}
	if addGen {
		ids, mask = append(ids, tokAssistant), append(mask, false)
	}
	return ids, mask, nil
}

func (e wordEncoder) EOS() []int32 { return []int32{tokEOS} }

// tinyConfig is the tiny shape with n layers.
func tinyConfig(n int) *llama.Config {
	c, err := llama.ShapeConfig("tiny")
	if err != nil {
		panic(err)
	}
	c.NumLayers = n
	return c
}

// tinyModel builds a random float32 tiny model with n layers (MLX thread).
func tinyModel(n int, seed uint64) (*llama.Model, error) {
	return llama.NewRandomModel(tinyConfig(n), mlx.Float32, seed)
}

// qa is one question/answer pair.
type qa struct{ q, a string }

// chatJSONL renders pairs as mlx-lm "messages" JSONL.
func chatJSONL(pairs []qa) string {
	var b strings.Builder
	for _, p := range pairs {
		line, _ := json.Marshal(map[string]any{"messages": []llama.Message{{Role: "user", Content: p.q}, {Role: "assistant", Content: p.a}}})
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// writeFile writes content to dir/name.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// trainPairs are short Q&A pairs of different lengths.
var trainPairs = []qa{
	{"what is fasting", "fasting is not eating for a while"},
	{"does insulin matter", "yes insulin drives fat storage"},
	{"can i drink water", "water is fine"},
	{"how long should i fast", "start with sixteen hours and build up slowly over weeks"},
	{"is coffee ok", "black coffee is ok"},
	{"what about sugar", "avoid added sugar"},
	{"will i lose weight", "most people lose weight when insulin stays low for longer"},
	{"what breaks a fast", "food with calories breaks a fast"},
}

var validPairs = []qa{
	{"why fast", "fasting lowers insulin"},
	{"is tea ok", "plain tea is ok"},
	{"what should i eat", "eat whole food and avoid sugar and snacks"},
}

// loadSplit writes pairs as JSONL and loads them through traindata.LoadSplit.
func loadSplit(t testing.TB, dir, name string, pairs []qa) *traindata.Split {
	t.Helper()
	writeFile(t, dir, name+".jsonl", chatJSONL(pairs))
	s, err := traindata.LoadSplit(traindata.Config{Dir: dir, MaskPrompt: true, MaxSeqLength: 64}, name, wordEncoder{vocab: 1024})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testConfig is a run config for the tiny model: dropout 0, LoRA on the
// last 2 layers, no evals unless asked.
func testConfig(out string) RunConfig {
	c := DefaultRunConfig()
	c.Model.Path = "unused"
	c.Data.Dir = "unused"
	c.Output.Dir = out
	c.LoRA.NumLayers = 2
	c.LoRA.Dropout = 0
	c.Eval.Every = 0
	c.Training.SaveEvery = 0
	c.Training.ReportEvery = 1
	return c
}

// hookHandler is a slog handler that hands every record to fn (on the
// goroutine that logs, which is the MLX thread inside Run).
type hookHandler struct {
	level slog.Level
	fn    func(r slog.Record)
}

func (h hookHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h hookHandler) Handle(_ context.Context, r slog.Record) error {
	if h.fn != nil {
		h.fn(r)
	}
	return nil
}
func (h hookHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h hookHandler) WithGroup(string) slog.Handler      { return h }

func quietLog() *slog.Logger { return slog.New(hookHandler{level: slog.LevelError}) }

// attrInt returns the integer attribute key of r.
func attrInt(r slog.Record, key string) (int, bool) {
	var v int
	var ok bool
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, ok = int(a.Value.Int64()), true
			return false
		}
		return true
	})
	return v, ok
}

// readFloats reads arrays back as float64 (MLX thread).
func readFloats(as ...*mlx.Array) ([][]float64, error) {
	out := make([][]float64, len(as))
	for i, a := range as {
		v, err := a.Float32s()
		if err != nil {
			return nil, err
		}
		out[i] = make([]float64, len(v))
		for j, x := range v {
			out[i][j] = float64(x)
		}
	}
	return out, nil
}

// setRandomB replaces every B with N(0, std) values so adapters matter
// (MLX thread).
func setRandomB(a *Adapters, std float32, seed uint64) error {
	for i, n := range a.Names {
		l := a.Layers[n]
		key := mlx.RandomKey(seed*7919 + uint64(i))
		b := mlx.Normal(0, std, mlx.Float32, key, l.B.Shape()...)
		key.Free()
		if err := mlx.Eval(b); err != nil {
			return err
		}
		mlx.Detach(b)
		l.B.Free()
		l.B = b
	}
	return nil
}

// maxAbsDiff is the largest |a-b| over equal-length slices.
func maxAbsDiff(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(a[i]-b[i]))
	}
	return m
}

func maxAbs(a []float64) float64 {
	m := 0.0
	for _, x := range a {
		m = math.Max(m, math.Abs(x))
	}
	return m
}

// mlxlm runs lora/testdata/mlxlm_ref.py with args and stdin JSON, and
// decodes its JSON output into out.
func mlxlm(t testing.TB, in any, out any, args ...string) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.Python(t), append([]string{filepath.Join(testenv.RepoRoot(), "lora", "testdata", "mlxlm_ref.py")}, args...)...)
	cmd.Stdin = strings.NewReader(string(b))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	res, err := cmd.Output()
	if err != nil {
		t.Fatalf("mlx-lm reference %v failed: %v\n%s", args, err, stderr.String())
	}
	if err := json.Unmarshal(res, out); err != nil {
		t.Fatalf("parse mlx-lm output: %v\n%s", err, res)
	}
}

// writeTinyModelDir writes a random float32 tiny model with n layers to
// a new directory.
func writeTinyModelDir(t testing.TB, n int, seed uint64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "model")
	doMLX(t, func() error { return llama.WriteRandomModel(dir, tinyConfig(n), mlx.Float32, seed) })
	return dir
}

// batchGradients is the gradient of b's loss sum (norm 1) with respect to
// tr's adapter parameters, every parameter's entries flattened in order.
func batchGradients(tr *Trainer, b traindata.Batch) ([]float64, error) {
	s := mlx.NewScope()
	defer s.Close()
	ids, targets, weights := batchArrays(b)
	mb := microBatch{ids: ids, targets: targets, weights: weights, norm: mlx.Scalar(1, mlx.Float32)}
	_, grads, err := tr.stepper.lossAndGrad.Call(tr.stepper.layout.packLoss(tr.stepper.lossArgs(tr.Adapters.Params(), mb))...)
	if err != nil {
		return nil, err
	}
	g, err := readFloats(grads...)
	if err != nil {
		return nil, err
	}
	var flat []float64
	for _, gi := range g {
		flat = append(flat, gi...)
	}
	return flat, nil
}
