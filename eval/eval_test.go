package eval

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fakeGen answers from a table keyed by the last user message and records
// the prompts it saw.
type fakeGen struct {
	answers map[string]Generation
	failOn  string
	seen    []string
}

func (g *fakeGen) Generate(ctx context.Context, msgs []Message) (Generation, error) {
	q := msgs[len(msgs)-1].Content
	g.seen = append(g.seen, q)
	msgs[0].Content = "mutated" // must not leak into the caller's question
	if q == g.failOn {
		return Generation{}, errors.New("out of memory")
	}
	a, ok := g.answers[q]
	if !ok {
		return Generation{}, errors.New("no answer for " + q)
	}
	return a, nil
}

// fakeGrader scores by answer length and fails on answers containing "FAIL".
type fakeGrader struct{ calls int }

func (g *fakeGrader) Grade(ctx context.Context, question, reference, answer string) (*JudgeScore, error) {
	g.calls++
	if strings.Contains(answer, "FAIL") {
		return nil, errors.New("judge unreachable")
	}
	if strings.Contains(answer, "**") {
		return &JudgeScore{Style: 9, Faithfulness: 8, Score: 8.5, Attempts: 1}, nil
	}
	return &JudgeScore{Style: 3, Faithfulness: 6, Score: 4.5, Attempts: 1}, nil
}

func testQuestions() []Question {
	sys := Message{Role: "system", Content: "You are concise."}
	return []Question{
		{ID: "q1", Messages: []Message{sys, {Role: "user", Content: "What is compounding?"}},
			Reference: "**Compounding** is growth on growth."},
		{ID: "q2", Messages: []Message{sys, {Role: "user", Content: "Why sleep?"}},
			Reference: "Sleep restores:\n\n- memory\n- mood"},
	}
}

func testGenerators() (*fakeGen, *fakeGen) {
	base := &fakeGen{answers: map[string]Generation{
		"What is compounding?": {Text: "In this video the speaker says compounding is growth", Tokens: 10, HitEOS: false, Seconds: 2},
		"Why sleep?":           {Text: "I'm sorry, but I can't help with FAIL", Tokens: 10, HitEOS: true, Seconds: 2},
	}}
	adapter := &fakeGen{answers: map[string]Generation{
		"What is compounding?": {Text: "**Compounding** is growth on growth.", Tokens: 8, HitEOS: true, Seconds: 1},
		"Why sleep?":           {Text: "Sleep restores:\n\n- memory\n- mood", Tokens: 12, HitEOS: true, Seconds: 3},
	}}
	return base, adapter
}

func TestRunPaired(t *testing.T) {
	base, adapter := testGenerators()
	judge := &fakeGrader{}
	var logs bytes.Buffer
	qs := testQuestions()
	fixed := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	res, err := RunPaired(context.Background(), qs, base, adapter, Options{
		Model: "smollm2", Adapter: "runs/a/adapter", Split: "test",
		Generation: map[string]any{"max_tokens": 64.0},
		Judge:      judge, JudgeModel: "judge-1",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Now:    func() time.Time { return fixed },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Model != "smollm2" || res.Adapter != "runs/a/adapter" || res.Split != "test" || res.N != 2 ||
		res.JudgeModel != "judge-1" || res.Created != "2025-01-02T03:04:05Z" {
		t.Errorf("header = %+v", res)
	}
	if qs[0].Messages[0].Content != "You are concise." {
		t.Error("generator mutation leaked into the caller's questions")
	}
	// Paired: each generator saw each question once, in order.
	wantSeen := []string{"What is compounding?", "Why sleep?"}
	if !reflect.DeepEqual(base.seen, wantSeen) || !reflect.DeepEqual(adapter.seen, wantSeen) {
		t.Errorf("seen base=%q adapter=%q", base.seen, adapter.seen)
	}
	if judge.calls != 4 {
		t.Errorf("judge calls = %d, want 4", judge.calls)
	}
	if len(res.Samples) != 2 {
		t.Fatalf("samples = %d", len(res.Samples))
	}
	s0, s1 := res.Samples[0], res.Samples[1]
	if s0.ID != "q1" || s0.Question != "What is compounding?" || s0.Reference != qs[0].Reference {
		t.Errorf("sample 0 = %+v", s0)
	}
	if s0.Adapter.Scores.RougeL.F1 != 1 || !s0.Adapter.Scores.FormatMatch {
		t.Errorf("adapter q1 scores = %+v", s0.Adapter.Scores)
	}
	if got := s0.Base.Scores.MetaRefs; !reflect.DeepEqual(got, []string{"in this video", "the speaker"}) {
		t.Errorf("base q1 meta refs = %q", got)
	}
	if !s1.Base.Scores.Refusal || s1.Base.Judge != nil || s1.Base.JudgeError == "" {
		t.Errorf("base q2 = %+v", s1.Base)
	}
	if !strings.Contains(logs.String(), "judge unreachable") {
		t.Errorf("judge failure not logged: %s", logs.String())
	}

	b, a := res.Summary.Base, res.Summary.Adapter
	if b == nil || a == nil {
		t.Fatal("summary side missing")
	}
	// Base q1: c=[in this video the speaker says compounding is growth] (9),
	// r=[compounding is growth on growth] (5), LCS=3: P=1/3, R=3/5, F1=3/7.
	// Base q2: no common tokens with the reference: F1=0.
	if !near(b.MeanRougeL, (3.0/7)/2) {
		t.Errorf("base mean ROUGE-L = %v, want %v", b.MeanRougeL, 3.0/14)
	}
	// Word ratios: q1 9/5; q2 8/6 (the reference "Sleep restores: - memory - mood"
	// has 6 white-space separated words, the list markers included).
	wantRatio := (9.0/5 + 8.0/6) / 2
	if !near(b.MeanLengthRatio, wantRatio) {
		t.Errorf("base mean length ratio = %v, want %v", b.MeanLengthRatio, wantRatio)
	}
	wantBase := SideSummary{N: 2, MeanRougeL: b.MeanRougeL, MeanLengthRatio: b.MeanLengthRatio, MeanWords: 8.5,
		FormatRate: 0, BoldRate: 0, ListRate: 0, EOSRate: 0.5, RefusalRate: 0.5, MetaRefRate: 0.5,
		MeanJudge: ptr(4.5), JudgeN: 1, TokensPerSec: 5}
	if !reflect.DeepEqual(*b, wantBase) {
		t.Errorf("base summary = %+v\nwant %+v", *b, wantBase)
	}
	wantAdapter := SideSummary{N: 2, MeanRougeL: 1, MeanLengthRatio: 1, MeanWords: 5.5,
		FormatRate: 1, BoldRate: 0.5, ListRate: 0.5, EOSRate: 1, RefusalRate: 0, MetaRefRate: 0,
		MeanJudge: ptr((8.5 + 4.5) / 2), JudgeN: 2, TokensPerSec: 5}
	if !reflect.DeepEqual(*a, wantAdapter) {
		t.Errorf("adapter summary = %+v\nwant %+v", *a, wantAdapter)
	}
}

func ptr(v float64) *float64 { return &v }

func TestRunPairedOneSide(t *testing.T) {
	_, adapter := testGenerators()
	res, err := RunPaired(context.Background(), testQuestions(), nil, adapter, Options{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Summary.Base != nil || res.Summary.Adapter == nil || res.Samples[0].Base != nil || res.Samples[0].Adapter == nil {
		t.Errorf("one-sided result = %+v", res.Summary)
	}
	if _, err := RunPaired(context.Background(), testQuestions(), nil, nil, Options{}); err == nil {
		t.Error("no generators: want error")
	}
}

func TestRunPairedErrors(t *testing.T) {
	base, adapter := testGenerators()
	adapter.failOn = "Why sleep?"
	_, err := RunPaired(context.Background(), testQuestions(), base, adapter, Options{Logger: discard()})
	if err == nil || !strings.Contains(err.Error(), "question 1 (q2), adapter: out of memory") {
		t.Errorf("err = %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = RunPaired(ctx, testQuestions(), base, nil, Options{Logger: discard()})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "q1") {
		t.Errorf("cancelled: err = %v", err)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestWriteReadJSON(t *testing.T) {
	base, adapter := testGenerators()
	res, err := RunPaired(context.Background(), testQuestions(), base, adapter, Options{
		Model: "m", Generation: map[string]any{"seed": 42.0, "greedy": true}, Logger: discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	res.Loss.Base = &LossStats{Loss: 2.5, Perplexity: 12.18, Tokens: 100}
	dir := t.TempDir()
	path := filepath.Join(dir, "eval.json")
	if err := os.WriteFile(path, []byte("old partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := res.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, res) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", got, res)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
	if err := res.WriteJSON(filepath.Join(dir, "missing", "eval.json")); err == nil ||
		!strings.Contains(err.Error(), "missing/eval.json") {
		t.Errorf("write into missing dir: err = %v", err)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadJSON(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("ReadJSON malformed: err = %v", err)
	}
}

func TestMarkdown(t *testing.T) {
	base, adapter := testGenerators()
	base.answers["Why sleep?"] = Generation{Text: "a | b <script>x</script>\nline2", Tokens: 5}
	res, err := RunPaired(context.Background(), testQuestions(), base, adapter, Options{
		Model: "smollm2", Adapter: "ad", Split: "test", Logger: discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	res.Loss.Base = &LossStats{Loss: 2.5, Perplexity: 12.1826, Tokens: 100}
	res.Loss.Adapter = &LossStats{Loss: 1.25, Perplexity: 3.4903, Tokens: 100}
	md := res.Markdown()
	for _, want := range []string{
		"# Evaluation: smollm2\n",
		"- Split: test, 2 questions\n",
		"| Metric | Base | Adapter |\n| --- | ---: | ---: |\n",
		"| Loss | 2.5000 | 1.2500 |\n",
		"| Perplexity | 12.183 | 3.490 |\n",
		"| Mean ROUGE-L F1 | 0.214 | 1.000 |\n",
		"| Ended with EOS | 0% | 100% |\n",
		"| Meta-references | 50% | 0% |\n",
		"| Mean judge score | – | – |\n",
		"### 2. q2\n",
		"> Sleep restores:\n>\n> - memory\n",
		"| Answer | a \\| b &lt;script&gt;x&lt;/script&gt;<br>line2 | Sleep restores:<br><br>- memory<br>- mood |\n",
		"| Stop | max tokens (5) | EOS after 12 tokens |\n",
		"| Meta-references | in this video, the speaker | none |\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q\n---\n%s", want, md)
		}
	}
	if strings.Contains(md, "<script>") {
		t.Error("markdown contains unescaped <script>")
	}
}

func TestQuestionFromChat(t *testing.T) {
	msgs := []Message{{"system", "Be brief."}, {"user", "Q?"}, {"assistant", "A."}}
	q, err := QuestionFromChat("valid-3", msgs)
	if err != nil {
		t.Fatal(err)
	}
	want := Question{ID: "valid-3", Messages: msgs[:2], Reference: "A."}
	if !reflect.DeepEqual(q, want) || q.UserText() != "Q?" {
		t.Errorf("q = %+v", q)
	}
	q.Messages[0].Content = "changed"
	if msgs[0].Content != "Be brief." {
		t.Error("Question shares the caller's slice")
	}
	for _, bad := range [][]Message{nil, msgs[:2], {{"system", "s"}, {"assistant", "a"}}} {
		if _, err := QuestionFromChat("x", bad); err == nil || !strings.Contains(err.Error(), "example x") {
			t.Errorf("QuestionFromChat(%v) err = %v", bad, err)
		}
	}
}

// batchGen is a fakeGen that also answers in batches, counting the calls.
type batchGen struct {
	*fakeGen
	batches [][]string
	single  int
}

func (g *batchGen) Generate(ctx context.Context, msgs []Message) (Generation, error) {
	g.single++
	return g.fakeGen.Generate(ctx, msgs)
}

func (g *batchGen) GenerateBatch(ctx context.Context, prompts [][]Message) ([]Generation, error) {
	var qs []string
	out := make([]Generation, len(prompts))
	for i, p := range prompts {
		qs = append(qs, p[len(p)-1].Content)
		var err error
		if out[i], err = g.fakeGen.Generate(ctx, p); err != nil {
			return nil, err
		}
	}
	g.batches = append(g.batches, qs)
	return out, nil
}

// TestRunPairedBatch checks that a BatchGenerator side is asked once for
// all its answers and that the result equals the one-by-one result.
func TestRunPairedBatch(t *testing.T) {
	base, adapter := testGenerators()
	one, err := RunPaired(context.Background(), testQuestions(), base, adapter, Options{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	b1, a1 := testGenerators()
	bb, ab := &batchGen{fakeGen: b1}, &batchGen{fakeGen: a1}
	qs := testQuestions()
	batched, err := RunPaired(context.Background(), qs, bb, ab, Options{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"What is compounding?", "Why sleep?"}}
	if !reflect.DeepEqual(bb.batches, want) || !reflect.DeepEqual(ab.batches, want) || bb.single+ab.single != 0 {
		t.Errorf("batches base %q adapter %q, single calls %d", bb.batches, ab.batches, bb.single+ab.single)
	}
	if qs[0].Messages[0].Content != "You are concise." {
		t.Error("generator mutation leaked into the caller's questions")
	}
	batched.Created, one.Created = "", ""
	if !reflect.DeepEqual(batched, one) {
		t.Errorf("batched result %+v\none by one %+v", batched, one)
	}
	ab.failOn = "Why sleep?"
	if _, err := RunPaired(context.Background(), testQuestions(), bb, ab, Options{Logger: discard()}); err == nil || !strings.Contains(err.Error(), "adapter answers: out of memory") {
		t.Errorf("failing batch: %v", err)
	}
}
