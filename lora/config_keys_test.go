package lora

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestKeysScalarOrList: lora.keys takes a list or a single string.
func TestKeysScalarOrList(t *testing.T) {
	cases := []struct {
		yaml string
		want []string
	}{
		{"keys: all-linear", []string{"all-linear"}},
		{"keys: [all-linear]", []string{"all-linear"}},
		{"keys: [self_attn.q_proj, mlp.down_proj]", []string{"self_attn.q_proj", "mlp.down_proj"}},
	}
	for _, c := range cases {
		p := filepath.Join(t.TempDir(), "run.yaml")
		body := "model:\n  path: m\ndata:\n  dir: d\nlora:\n  " + c.yaml + "\n"
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadRunConfig(p, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.yaml, err)
		}
		if !reflect.DeepEqual([]string(cfg.LoRA.Keys), c.want) {
			t.Errorf("%s: keys %v, want %v", c.yaml, cfg.LoRA.Keys, c.want)
		}
	}
}

// configBase is the smallest valid config: lines 1-4.
const configBase = "model:\n  path: /m\ndata:\n  dir: /d\n"

// mergeChain is a config whose optimizer section is the last of n
// mappings, each merging the one before it twice.
func mergeChain(n int) string {
	var sb strings.Builder
	sb.WriteString("anchors:\n  a0: &a0 {lr: 0.1}\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&sb, "  a%d: &a%d {<<: [*a%d, *a%d]}\n", i, i, i-1, i-1)
	}
	fmt.Fprintf(&sb, "optimizer: *a%d\n", n-1)
	return configBase + sb.String()
}

// badConfigs are bad config files and the whole error each gives ({f}
// stands for the file); FuzzLoadRunConfig starts from them too.
var badConfigs = []struct {
	name     string
	yaml     string
	sections []string // dataSections
	want     string
}{
	{"typo", configBase + "lora:\n  rnak: 8\n", nil,
		"{f}:6: unknown key lora.rnak (did you mean lora.rank?)"},
	{"typo, other case", configBase + "training:\n  Batch_Size: 2\n", nil,
		"{f}:6: unknown key training.Batch_Size (did you mean training.batch_size?)"},
	{"typo in data", configBase + "  max_seq_lenght: 9\n", nil,
		"{f}:5: unknown key data.max_seq_lenght (did you mean data.max_seq_length?)"},
	{"typo of another reader's data section", configBase + "  transcript:\n    dir: t\n", []string{"llm", "transcripts"},
		"{f}:5: unknown key data.transcript (did you mean data.transcripts?)"},
	{"data section nobody named", configBase + "  llm:\n    model: x\n", nil,
		"{f}:5: unknown key data.llm"},
	{"key in the wrong section", configBase + "training:\n  lr: 0.1\n", nil,
		"{f}:6: unknown key training.lr (did you mean optimizer.lr?)"},
	{"key outside any section", configBase + "rank: 4\n", nil,
		"{f}:5: unknown key rank (did you mean lora.rank?)"},
	{"mlx-lm's name", configBase + "optimizer:\n  learning_rate: 1.0e-4\n", nil,
		"{f}:6: unknown key optimizer.learning_rate (did you mean optimizer.lr?)"},
	{"PEFT's name", configBase + "lora:\n  lora_alpha: 16\n", nil,
		"{f}:6: unknown key lora.lora_alpha (did you mean lora.alpha?)"},
	{"unknown section", configBase + "sections:\n  x: 1\n", nil,
		"{f}:5: unknown key sections"},
	{"integer", configBase + "training:\n  batch_size: two\n", nil,
		`{f}:6: training.batch_size: want an integer, got "two"`},
	{"integer given a fraction", configBase + "lora:\n  rank: 2.5\n", nil,
		`{f}:6: lora.rank: want an integer, got "2.5"`},
	{"number", configBase + "optimizer:\n  lr: fast\n", nil,
		`{f}:6: optimizer.lr: want a number, got "fast"`},
	{"bool", configBase + "training:\n  compile: maybe\n", nil,
		`{f}:6: training.compile: want true or false, got "maybe"`},
	{"unsigned", configBase + "training:\n  seed: -1\n", nil,
		`{f}:6: training.seed: want a non-negative integer, got "-1"`},
	{"string given a section", "model:\n  path:\n    dir: /m\ndata:\n  dir: /d\n", nil,
		"{f}:3: model.path: want a string, got a section (key: value lines)"},
	{"list for a number", configBase + "lora:\n  rank: [1, 2]\n", nil,
		"{f}:6: lora.rank: want an integer, got a list"},
	{"section given a value", configBase + "lora: big\n", nil,
		`{f}:5: lora: want a section of key: value lines, got "big"`},
	{"keys given a section", configBase + "lora:\n  keys: {a: b}\n", nil,
		"{f}:6: lora.keys: want a module path or a list of them, got a section (key: value lines)"},
	{"keys list of lists", configBase + "lora:\n  keys: [self_attn.q_proj, [x]]\n", nil,
		"{f}:6: lora.keys: want module paths (strings), got a list in the list"},
	{"given twice", configBase + "lora:\n  rank: 4\n  rank: 8\n", nil,
		"{f}:7: lora.rank is given twice (also at {f}:6)"},
	{"merged-in key", configBase + "optimizer:\n  <<: {lr: 0.1, bogus: 1}\n", nil,
		"{f}:6: unknown key optimizer.bogus"},
	// Found by FuzzLoadRunConfig: each mapping merges the one before it
	// twice, so checking every merge anew took 2^60 steps.
	{"nested merges", mergeChain(60), nil,
		"{f}:5: unknown key anchors"},
	{"every problem at once", configBase + "lora:\n  rnak: 8\n  dropout: lots\ntraining:\n  epoch: 3\n", nil,
		"{f}:6: unknown key lora.rnak (did you mean lora.rank?)\n" +
			`{f}:7: lora.dropout: want a number, got "lots"` + "\n" +
			"{f}:9: unknown key training.epoch (did you mean training.epochs?)"},
	{"not a mapping", "- model\n- data\n", nil,
		"{f}:1: the config: want a section of key: value lines, got a list"},
	{"YAML syntax", configBase + "lora:\n  rank: 4\n bad: [\n", nil,
		"{f}:7: did not find expected key"},
	{"unclosed list", configBase + "lora:\n  keys: [self_attn.q_proj, mlp.up_proj\nschedule:\n  name: cosine\n", nil,
		"{f}:6: did not find expected ',' or ']'"},
	{"two documents", configBase + "---\nlora:\n  rank: 4\n", nil,
		"{f}:5: a second YAML document (---): a run config is one document"},
	{"bad value", configBase + "optimizer:\n  lr: -0.001\n", nil,
		"{f}:6: optimizer.lr must be positive, got -0.001"},
	{"bad values, one line each", configBase + "optimizer:\n  beta1: 1\n  beta2: -0.5\n", nil,
		"{f}:6: optimizer.beta1 must be in [0, 1), got 1\n{f}:7: optimizer.beta2 must be in [0, 1), got -0.5"},
	{"value from another key", configBase + "optimizer:\n  lr: 1.0e-5\nschedule:\n  min_lr: 1\n", nil,
		"{f}:8: schedule.min_lr must be in [0, optimizer.lr], got 1"},
	{"required key missing", "model:\n  path: /m\n", nil,
		"{f}: data.dir is required"},
	{"unknown module", configBase + "lora:\n  keys: [self_attn.x_proj]\n", nil,
		`{f}:6: lora.keys has unknown module "self_attn.x_proj" (want all-linear or some of self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, self_attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)`},
	{"memory limit too large", configBase + "training:\n  memory_limit_gb: 1.0e+30\n", nil,
		"{f}:6: training.memory_limit_gb must be in [0, 1048576] GiB (0: MLX's default), got 1e+30"},
	{"micro_batch zero", configBase + "training:\n  micro_batch: 0\n", nil,
		`{f}:6: training.micro_batch: want auto or a positive integer, got "0"`},
	{"micro_batch negative", configBase + "training:\n  micro_batch: -4\n", nil,
		`{f}:6: training.micro_batch: want auto or a positive integer, got "-4"`},
	{"micro_batch a word", configBase + "training:\n  micro_batch: automatic\n", nil,
		`{f}:6: training.micro_batch: want auto or a positive integer, got "automatic"`},
	{"micro_batch a fraction", configBase + "training:\n  micro_batch: 2.5\n", nil,
		`{f}:6: training.micro_batch: want auto or a positive integer, got "2.5"`},
	{"micro_batch a list", configBase + "training:\n  micro_batch: [4]\n", nil,
		"{f}:6: training.micro_batch: want auto or a positive integer, got a list"},
	{"micro_batch_tokens negative", configBase + "training:\n  micro_batch_tokens: -1\n", nil,
		"{f}:6: training.micro_batch_tokens must be non-negative (0: data.max_seq_length), got -1"},
	{"dist_timeout zero", configBase + "training:\n  dist_timeout: 0\n", nil,
		"{f}:6: training.dist_timeout must be in (0, 604800] seconds, got 0"},
	{"dist_timeout too long", configBase + "training:\n  dist_timeout: 1.0e+9\n", nil,
		"{f}:6: training.dist_timeout must be in (0, 604800] seconds, got 1e+09"},
	{"bias_correction not a boolean", configBase + "optimizer:\n  bias_correction: sometimes\n", nil,
		`{f}:6: optimizer.bias_correction: want true or false, got "sometimes"`},
}

// TestBadConfigs: every bad config file is refused with the whole error
// spelled out in the user's words: the file and line, the dotted key, what
// was expected, a suggestion for a near-miss key. {f} stands for the file.
func TestBadConfigs(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range badConfigs {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.yaml)
			_, err := LoadRunConfig(path, nil, tc.sections...)
			want := strings.ReplaceAll(tc.want, "{f}", path)
			if err == nil || err.Error() != want {
				t.Errorf("error\n%v\nwant\n%s", err, want)
			}
		})
	}
}

// badOverrides are bad --set values, applied to configBase+"lora:\n  rank: 4\n",
// and the whole error each gives; FuzzLoadRunConfig starts from them too.
var badOverrides = []struct{ set, want string }{
	{"lora.rnak=8", "--set lora.rnak=8: unknown key lora.rnak (did you mean lora.rank?)"},
	{"lroa.rank=8", "--set lroa.rank=8: unknown key lroa (did you mean lora?)"},
	{"training.epoch=3", "--set training.epoch=3: unknown key training.epoch (did you mean training.epochs?)"},
	{"lora.rank=eight", `--set lora.rank=eight: lora.rank: want an integer, got "eight"`},
	{"training.batch_size=two", `--set training.batch_size=two: training.batch_size: want an integer, got "two"`},
	{"lora.keys={a: b}", "--set lora.keys={a: b}: lora.keys: want a module path or a list of them, got a section (key: value lines)"},
	{"optimizer.lr=-1", "--set optimizer.lr=-1: optimizer.lr must be positive, got -1"},
	{"optimizer.lr=.inf", "--set optimizer.lr=.inf: optimizer.lr must be a finite number, got +Inf"},
	{"lora.rank", "--set lora.rank: want section.key=value"},
	{"=3", "--set =3: want section.key=value"},
	{"lora.rank.deep=1", "--set lora.rank.deep=1: lora.rank is not a section"},
	{"training.micro_batch=-2", `--set training.micro_batch=-2: training.micro_batch: want auto or a positive integer, got "-2"`},
	{"training.micro_batch=all", `--set training.micro_batch=all: training.micro_batch: want auto or a positive integer, got "all"`},
	{"optimizer.bias_correction=maybe", `--set optimizer.bias_correction=maybe: optimizer.bias_correction: want true or false, got "maybe"`},
	{"training.dist_timeout=-5", "--set training.dist_timeout=-5: training.dist_timeout must be in (0, 604800] seconds, got -5"},
}

// TestBadOverrides: a bad --set is refused with an error that names it.
func TestBadOverrides(t *testing.T) {
	path := writeFile(t, t.TempDir(), "run.yaml", configBase+"lora:\n  rank: 4\n")
	for _, tc := range badOverrides {
		t.Run(tc.set, func(t *testing.T) {
			_, err := LoadRunConfig(path, []string{tc.set})
			if err == nil || err.Error() != tc.want {
				t.Errorf("error\n%v\nwant\n%s", err, tc.want)
			}
		})
	}
	// A file error keeps its line when an override is given too, and an
	// override into an empty section works.
	bad := writeFile(t, t.TempDir(), "bad.yaml", configBase+"lora:\n  rnak: 8\n")
	if _, err := LoadRunConfig(bad, []string{"lora.rank=2"}); err == nil || err.Error() != bad+":6: unknown key lora.rnak (did you mean lora.rank?)" {
		t.Errorf("file error with an override: %v", err)
	}
	empty := writeFile(t, t.TempDir(), "empty.yaml", configBase+"lora:\n")
	if cfg, err := LoadRunConfig(empty, []string{"lora.rank=2"}); err != nil || cfg.LoRA.Rank != 2 || cfg.LoRA.Alpha != 8 {
		t.Errorf("override into an empty section: rank %d alpha %v, %v", cfg.LoRA.Rank, cfg.LoRA.Alpha, err)
	}
}

// TestEditDistance checks the distance behind the suggestions against
// hand-counted edits.
func TestEditDistance(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"rank", "rank", 0}, {"", "abc", 3}, {"abc", "", 3},
		{"rnak", "rank", 1},      // one swap
		{"rak", "rank", 1},       // one insertion
		{"ranks", "rank", 1},     // one deletion
		{"rang", "rank", 1},      // one substitution
		{"epoch", "epochs", 1},   // one insertion at the end
		{"ca", "abc", 3},         // OSA: no edit of a swapped pair
		{"kitten", "sitting", 3}, // the textbook case
	}
	for _, c := range cases {
		if got := editDistance(c.a, c.b); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
