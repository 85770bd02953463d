package data

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const runYAML = `model: meta-llama/Llama-3.2-1B-Instruct
lora:
  rank: 8
  whatever: [1, 2]
data:
  dir: data/chat
  train: data/chat/train.jsonl
  valid: data/chat/valid.jsonl
  test: data/chat/test.jsonl
  mask_prompt: true
  max_seq_length: 2048
  system_prompt: "You are Dr. Example."
  a_future_training_key: {nested: true}
  work_dir: runs/mydata
  transcripts:
    videos: [dQw4w9WgXcQ, "https://youtu.be/abcdefghijk"]
    local_dir: transcripts/
    http:
      timeout: 30s
      max_retries: 2
      rate_per_sec: 0.5
    api:
      base_url: https://transcripts.example/v1
      params: {lang: en}
  youtube:
    channels: ["@drexample"]
  llm:
    base_url: http://localhost:8080/v1
    model: llama3.1:8b
    api_key_env: LOCAL_LLM_KEY
    seed: 7
    json_mode: json_object
  questions:
    max_questions: 12
    prompt:
      user: "Transcript: {{.Transcript}}"
  build:
    out_dir: out/dataset
    dedup:
      threshold: 0.6
    split: {train: 0.9, valid: 0.05, test: 0.05, seed: 1}
  augment:
    splits: [train, valid]
`

func TestDecodePipelineYAML(t *testing.T) {
	cfg, err := DecodePipelineYAML([]byte(runYAML), "run.yaml")
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultPipelineConfig()
	checks := []struct {
		name      string
		got, want any
	}{
		{"work_dir", cfg.WorkDir, "runs/mydata"},
		{"videos", cfg.Transcripts.Videos, []string{"dQw4w9WgXcQ", "https://youtu.be/abcdefghijk"}},
		{"timeout", cfg.Transcripts.HTTP.Timeout, 30 * time.Second},
		{"max_retries", cfg.Transcripts.HTTP.MaxRetries, 2},
		{"rate", cfg.Transcripts.HTTP.RatePerSec, 0.5},
		{"backoff kept", cfg.Transcripts.HTTP.BackoffBase, def.Transcripts.HTTP.BackoffBase},
		{"api base", cfg.Transcripts.API.BaseURL, "https://transcripts.example/v1"},
		{"params merge with defaults", cfg.Transcripts.API.Params, map[string]string{"text": "true", "lang": "en"}},
		{"api key header kept", cfg.Transcripts.API.APIKeyHeader, "x-api-key"},
		{"channels", cfg.YouTube.Channels, []string{"@drexample"}},
		{"llm model", cfg.LLM.Model, "llama3.1:8b"},
		{"llm key env", cfg.LLM.APIKeyEnv, "LOCAL_LLM_KEY"},
		{"seed", *cfg.LLM.Seed, 7},
		{"concurrency kept", cfg.LLM.Concurrency, 20},
		{"json mode", cfg.LLM.JSONMode, "json_object"},
		{"max questions", cfg.Questions.MaxQuestions, 12},
		{"user prompt", cfg.Questions.Prompt.User, "Transcript: {{.Transcript}}"},
		{"out dir", cfg.OutDir(), "out/dataset"},
		{"threshold", cfg.Build.Dedup.Threshold, 0.6},
		{"ngram kept", cfg.Build.Dedup.NGram, 3},
		{"split", cfg.Build.Split, SplitConfig{Train: 0.9, Valid: 0.05, Test: 0.05, Seed: 1}},
		{"augment splits", cfg.Augment.Splits, []string{"train", "valid"}},
		{"build system prompt not taken from data.system_prompt", cfg.Build.SystemPrompt, ""},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestDecodePipelineYAMLErrors(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"data:\n  llm:\n    modle: x\n", `cfg.yaml line 3: unknown key "modle" in data.llm (known: api_key_env, base_url, concurrency, http, json_mode, max_invalid_retries, max_tokens, model, seed, stream, temperature)`},
		{"data:\n  build:\n    dedup:\n      treshold: 0.5\n", `cfg.yaml line 4: unknown key "treshold" in data.build.dedup`},
		{"data:\n  transcripts:\n    http:\n      timeuot: 3s\n", `cfg.yaml line 4: unknown key "timeuot" in data.transcripts.http`},
		{"data:\n  llm:\n    concurrency: many\n", "cfg.yaml: data.llm: yaml: unmarshal errors:\n  line 3: cannot unmarshal !!str `many` into int"},
		{"data:\n  transcripts:\n    http:\n      timeout: soon\n", "cfg.yaml: data.transcripts: yaml: unmarshal errors:\n  line 4: cannot unmarshal !!str `soon` into time.Duration"},
		{"data: [1, 2]\n", "cfg.yaml line 1: data: must be a mapping"},
		{"data:\n  llm: [\n", "parse cfg.yaml: yaml: line 2: did not find expected node content"},
		{"- a\n- b\n", "cfg.yaml line 1: the top level must be a mapping"},
	}
	for _, tc := range tests {
		_, err := DecodePipelineYAML([]byte(tc.yaml), "cfg.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodePipelineYAML(%q) error = %v\nwant it to contain %q", tc.yaml, err, tc.want)
		}
	}
}

func TestDecodePipelineYAMLDefaults(t *testing.T) {
	for _, y := range []string{"", "model: x\n", "data:\n", "data:\n  dir: d\n  mask_prompt: true\n"} {
		cfg, err := DecodePipelineYAML([]byte(y), "c.yaml")
		if err != nil {
			t.Fatalf("%q: %v", y, err)
		}
		if !reflect.DeepEqual(cfg, DefaultPipelineConfig()) {
			t.Errorf("%q: config differs from the defaults", y)
		}
	}
}

func TestValidate(t *testing.T) {
	cfg := DefaultPipelineConfig()
	cfg.LLM.JSONMode = "xml"
	cfg.LLM.Concurrency = 0
	cfg.Build.Dedup.Bands = 7
	cfg.Build.Split = SplitConfig{}
	cfg.Augment.Splits = []string{"dev"}
	cfg.Transcripts.HTTP.Timeout = 0
	err := cfg.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{
		`data.llm.json_mode: "xml": want auto, json_schema, json_object or prompt`,
		"data.llm.concurrency: must be at least 1, got 0",
		"data.build.dedup: bands (7) must divide num_hashes (120)",
		"data.build.split: fractions must be 0 or more with a positive sum, got 0/0/0",
		`data.augment.splits: "dev": want train, valid or test`,
		"data.transcripts.http.timeout: must be positive, got 0s",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error lacks %q:\n%v", want, err)
		}
	}
	if err := DefaultPipelineConfig().Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}
