package data

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// PipelineConfig holds the settings of the dataset pipeline. In the YAML run
// file it lives in sub-sections of the top-level data: section; the keys
// directly under data: (dir, train, valid, test, mask_prompt, max_seq_length,
// system_prompt, ...) belong to training and are not read here.
//
// Secrets never appear in a PipelineConfig: it holds the names of the
// environment variables that carry the API keys.
type PipelineConfig struct {
	// WorkDir holds the intermediate files of every stage.
	WorkDir     string            `yaml:"work_dir" json:"work_dir"`
	Transcripts TranscriptsConfig `yaml:"transcripts" json:"transcripts"`
	YouTube     YouTubeConfig     `yaml:"youtube" json:"youtube"`
	LLM         LLMConfig         `yaml:"llm" json:"llm"`
	Questions   QuestionsConfig   `yaml:"questions" json:"questions"`
	Answers     AnswersConfig     `yaml:"answers" json:"answers"`
	Build       BuildConfig       `yaml:"build" json:"build"`
	Augment     AugmentConfig     `yaml:"augment" json:"augment"`
}

// HTTPConfig sets how one HTTP endpoint is called: timeout per attempt,
// bounded retries with exponential backoff and jitter, and a token-bucket
// rate limit.
type HTTPConfig struct {
	// Timeout bounds one attempt, reading the body included. For a streamed
	// chat completion it bounds the whole stream.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// MaxRetries is the number of retries after the first attempt.
	MaxRetries int `yaml:"max_retries" json:"max_retries"`
	// BackoffBase is the first backoff; it doubles on each retry.
	BackoffBase time.Duration `yaml:"backoff_base" json:"backoff_base"`
	// BackoffMax caps the backoff (not Retry-After, see MaxRetryAfter).
	BackoffMax time.Duration `yaml:"backoff_max" json:"backoff_max"`
	// MaxRetryAfter is the longest Retry-After that is waited for; a server
	// asking for more fails the request instead.
	MaxRetryAfter time.Duration `yaml:"max_retry_after" json:"max_retry_after"`
	// RatePerSec limits requests per second; 0 means no limit.
	RatePerSec float64 `yaml:"rate_per_sec" json:"rate_per_sec"`
	// Burst is the token-bucket size (at least 1).
	Burst int `yaml:"burst" json:"burst"`
}

// TranscriptsConfig configures `fungtrain data transcripts`.
type TranscriptsConfig struct {
	// Videos lists video URLs or ids to fetch through the transcript API.
	Videos []string `yaml:"videos" json:"videos"`
	// VideosFile names a file with one URL or id per line (# comments).
	VideosFile string `yaml:"videos_file" json:"videos_file"`
	// LocalDir is a directory of .txt, .srt, .vtt and .json transcripts.
	LocalDir string `yaml:"local_dir" json:"local_dir"`
	// Concurrency is the number of transcripts fetched at once.
	Concurrency int `yaml:"concurrency" json:"concurrency"`
	// MinChars: shorter transcripts are recorded as permanent failures.
	MinChars int                 `yaml:"min_chars" json:"min_chars"`
	API      TranscriptAPIConfig `yaml:"api" json:"api"`
	HTTP     HTTPConfig          `yaml:"http" json:"http"`
}

// TranscriptAPIConfig describes the HTTP transcript API. The defaults fit a
// Supadata-style GET {base_url}{path}?url=VIDEO_URL&text=true with the key in
// an x-api-key header.
type TranscriptAPIConfig struct {
	BaseURL string `yaml:"base_url" json:"base_url"`
	Path    string `yaml:"path" json:"path"`
	// APIKeyEnv names the environment variable holding the key.
	APIKeyEnv string `yaml:"api_key_env" json:"api_key_env"`
	// APIKeyHeader is the header that carries the key ("" for none).
	APIKeyHeader string `yaml:"api_key_header" json:"api_key_header"`
	// APIKeyParam, when set, sends the key as this query parameter instead.
	APIKeyParam string `yaml:"api_key_param" json:"api_key_param"`
	// URLParam is the query parameter that carries the video URL.
	URLParam string `yaml:"url_param" json:"url_param"`
	// VideoURL turns a video id into the URL sent; "{id}" is replaced.
	VideoURL string `yaml:"video_url" json:"video_url"`
	// Params are extra query parameters, e.g. text: "true".
	Params map[string]string `yaml:"params" json:"params"`
	// TextField is the response field with the transcript: a string or a
	// list of segments with a "text" field.
	TextField string `yaml:"text_field" json:"text_field"`
	// LangField is the response field with the language, if any.
	LangField string `yaml:"lang_field" json:"lang_field"`
	// When the API answers {"jobId": ...} (Supadata does for long videos),
	// {base_url}{path}/{jobId} is polled every PollInterval, at most
	// MaxPolls times.
	PollInterval time.Duration `yaml:"poll_interval" json:"poll_interval"`
	MaxPolls     int           `yaml:"max_polls" json:"max_polls"`
}

// YouTubeConfig configures channel listing through the YouTube Data API v3.
type YouTubeConfig struct {
	BaseURL   string `yaml:"base_url" json:"base_url"`
	APIKeyEnv string `yaml:"api_key_env" json:"api_key_env"`
	// Channels are channel ids (UC...) or handles (@name).
	Channels []string `yaml:"channels" json:"channels"`
	// MaxVideos caps the videos taken per channel; 0 means all.
	MaxVideos int        `yaml:"max_videos" json:"max_videos"`
	HTTP      HTTPConfig `yaml:"http" json:"http"`
}

// LLMConfig configures the OpenAI-compatible chat endpoint shared by the
// questions, answers and augment stages.
type LLMConfig struct {
	BaseURL   string `yaml:"base_url" json:"base_url"`
	APIKeyEnv string `yaml:"api_key_env" json:"api_key_env"`
	Model     string `yaml:"model" json:"model"`
	// Temperature of every request.
	Temperature float32 `yaml:"temperature" json:"temperature"`
	// MaxTokens caps each completion; 0 leaves it to the server.
	MaxTokens int `yaml:"max_tokens" json:"max_tokens"`
	// Seed is sent when set, for servers that honour it.
	Seed *int `yaml:"seed" json:"seed,omitempty"`
	// JSONMode is auto, json_schema, json_object or prompt. auto starts with
	// json_schema and steps down when the server rejects it.
	JSONMode string `yaml:"json_mode" json:"json_mode"`
	// Stream uses streamed completions.
	Stream bool `yaml:"stream" json:"stream"`
	// Concurrency is the default number of requests in flight per stage.
	Concurrency int `yaml:"concurrency" json:"concurrency"`
	// MaxInvalidRetries bounds the retries of a request whose reply is
	// unusable (malformed JSON, failed validation, empty, cut stream).
	MaxInvalidRetries int        `yaml:"max_invalid_retries" json:"max_invalid_retries"`
	HTTP              HTTPConfig `yaml:"http" json:"http"`
}

// PromptConfig is a pair of text/template prompts. A *_file entry, when set,
// replaces the inline template with the file's content.
type PromptConfig struct {
	System     string `yaml:"system" json:"system"`
	User       string `yaml:"user" json:"user"`
	SystemFile string `yaml:"system_file" json:"system_file"`
	UserFile   string `yaml:"user_file" json:"user_file"`
}

// QuestionsConfig configures `fungtrain data questions`.
type QuestionsConfig struct {
	Prompt PromptConfig `yaml:"prompt" json:"prompt"`
	// MaxQuestions caps the questions kept per video.
	MaxQuestions int `yaml:"max_questions" json:"max_questions"`
	// MinChars drops shorter questions.
	MinChars int `yaml:"min_chars" json:"min_chars"`
	// Concurrency overrides llm.concurrency when above 0.
	Concurrency int `yaml:"concurrency" json:"concurrency"`
}

// AnswersConfig configures `fungtrain data answers`.
type AnswersConfig struct {
	Prompt PromptConfig `yaml:"prompt" json:"prompt"`
	// Persona is who speaks, available to templates as {{.Persona}}.
	Persona string `yaml:"persona" json:"persona"`
	// Concurrency overrides llm.concurrency when above 0.
	Concurrency int `yaml:"concurrency" json:"concurrency"`
}

// BuildConfig configures `fungtrain data build`.
type BuildConfig struct {
	// OutDir receives train.jsonl, valid.jsonl and test.jsonl. Empty means
	// {work_dir}/dataset.
	OutDir string `yaml:"out_dir" json:"out_dir"`
	// SystemPrompt, when set, is the system turn of every example.
	SystemPrompt string        `yaml:"system_prompt" json:"system_prompt"`
	Dedup        DedupConfig   `yaml:"dedup" json:"dedup"`
	Quality      QualityConfig `yaml:"quality" json:"quality"`
	Split        SplitConfig   `yaml:"split" json:"split"`
}

// DedupConfig configures duplicate removal: exact matches of the normalised
// question, then near duplicates by character n-gram MinHash with LSH
// banding, confirmed by the exact Jaccard similarity of the n-gram sets.
type DedupConfig struct {
	// Disabled turns deduplication off.
	Disabled bool `yaml:"disabled" json:"disabled"`
	// Threshold is the Jaccard similarity at or above which two questions
	// are near duplicates.
	Threshold float64 `yaml:"threshold" json:"threshold"`
	// NGram is the character n-gram length.
	NGram int `yaml:"ngram" json:"ngram"`
	// NumHashes is the MinHash signature length; Bands must divide it.
	NumHashes int `yaml:"num_hashes" json:"num_hashes"`
	Bands     int `yaml:"bands" json:"bands"`
	// Field is what is compared: question or question_answer.
	Field string `yaml:"field" json:"field"`
}

// QualityConfig configures quality scoring.
type QualityConfig struct {
	// MinScore drops pairs scoring below it (0 keeps all).
	MinScore float64 `yaml:"min_score" json:"min_score"`
	// MinAnswerChars and MaxAnswerChars bound a full-score answer length.
	MinAnswerChars int `yaml:"min_answer_chars" json:"min_answer_chars"`
	MaxAnswerChars int `yaml:"max_answer_chars" json:"max_answer_chars"`
	// MinQuestionChars: shorter questions score 0.
	MinQuestionChars int `yaml:"min_question_chars" json:"min_question_chars"`
	// ExtraMetaPatterns and ExtraRefusalPatterns are regular expressions
	// (case-insensitive) added to the built-in lists.
	ExtraMetaPatterns    []string `yaml:"extra_meta_patterns" json:"extra_meta_patterns"`
	ExtraRefusalPatterns []string `yaml:"extra_refusal_patterns" json:"extra_refusal_patterns"`
}

// SplitConfig sets the train/valid/test fractions and the shuffle seed.
// Videos, not examples, are assigned to splits.
type SplitConfig struct {
	Train float64 `yaml:"train" json:"train"`
	Valid float64 `yaml:"valid" json:"valid"`
	Test  float64 `yaml:"test" json:"test"`
	Seed  uint64  `yaml:"seed" json:"seed"`
}

// AugmentConfig configures `fungtrain data augment`.
type AugmentConfig struct {
	// Paraphrases is the number of question paraphrases per pair.
	Paraphrases int `yaml:"paraphrases" json:"paraphrases"`
	// ShortAnswers adds one short-answer variant per pair.
	ShortAnswers bool `yaml:"short_answers" json:"short_answers"`
	// Splits lists the splits augmented; variants stay in their source's
	// split.
	Splits            []string     `yaml:"splits" json:"splits"`
	ParaphrasePrompt  PromptConfig `yaml:"paraphrase_prompt" json:"paraphrase_prompt"`
	ShortAnswerPrompt PromptConfig `yaml:"short_answer_prompt" json:"short_answer_prompt"`
	// Concurrency overrides llm.concurrency when above 0.
	Concurrency int `yaml:"concurrency" json:"concurrency"`
}

// DefaultPipelineConfig returns the defaults that YAML and flags override.
func DefaultPipelineConfig() PipelineConfig {
	return PipelineConfig{
		WorkDir: "runs/data",
		Transcripts: TranscriptsConfig{
			Concurrency: 4,
			MinChars:    200,
			API: TranscriptAPIConfig{
				BaseURL:      "https://api.supadata.ai/v1",
				Path:         "/transcript",
				APIKeyEnv:    "SUPADATA_API_KEY",
				APIKeyHeader: "x-api-key",
				URLParam:     "url",
				VideoURL:     "https://www.youtube.com/watch?v={id}",
				Params:       map[string]string{"text": "true"},
				TextField:    "content",
				LangField:    "lang",
				PollInterval: 5 * time.Second,
				MaxPolls:     60,
			},
			HTTP: HTTPConfig{
				Timeout: 60 * time.Second, MaxRetries: 5,
				BackoffBase: time.Second, BackoffMax: 60 * time.Second,
				MaxRetryAfter: 5 * time.Minute, RatePerSec: 2, Burst: 2,
			},
		},
		YouTube: YouTubeConfig{
			BaseURL:   "https://www.googleapis.com/youtube/v3",
			APIKeyEnv: "YOUTUBE_API_KEY",
			HTTP: HTTPConfig{
				Timeout: 30 * time.Second, MaxRetries: 5,
				BackoffBase: time.Second, BackoffMax: 60 * time.Second,
				MaxRetryAfter: 5 * time.Minute, RatePerSec: 5, Burst: 5,
			},
		},
		LLM: LLMConfig{
			BaseURL:           "https://api.openai.com/v1",
			APIKeyEnv:         "OPENAI_API_KEY",
			Model:             "gpt-4o-mini",
			Temperature:       0.3,
			JSONMode:          JSONModeAuto,
			Concurrency:       20,
			MaxInvalidRetries: 3,
			HTTP: HTTPConfig{
				Timeout: 5 * time.Minute, MaxRetries: 6,
				BackoffBase: 2 * time.Second, BackoffMax: 2 * time.Minute,
				MaxRetryAfter: 10 * time.Minute,
			},
		},
		Questions: QuestionsConfig{MaxQuestions: 20, MinChars: 10},
		Answers:   AnswersConfig{Persona: "the physician"},
		Build: BuildConfig{
			Dedup: DedupConfig{Threshold: 0.5, NGram: 3, NumHashes: 120, Bands: 40, Field: "question"},
			Quality: QualityConfig{
				MinScore: 0.5, MinAnswerChars: 150, MaxAnswerChars: 6000, MinQuestionChars: 10,
			},
			Split: SplitConfig{Train: 0.8, Valid: 0.1, Test: 0.1, Seed: 42},
		},
		Augment: AugmentConfig{Paraphrases: 2, ShortAnswers: true, Splits: []string{"train"}},
	}
}

// JSON modes of LLMConfig.JSONMode.
const (
	JSONModeAuto       = "auto"
	JSONModeSchema     = "json_schema"
	JSONModeObject     = "json_object"
	JSONModePrompt     = "prompt"
	dedupFieldQuestion = "question"
	dedupFieldQA       = "question_answer"
)

// Validate checks the values that would otherwise fail late.
func (c PipelineConfig) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("data.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.WorkDir == "" {
		bad("work_dir", "must not be empty")
	}
	for name, h := range map[string]HTTPConfig{"transcripts.http": c.Transcripts.HTTP, "youtube.http": c.YouTube.HTTP, "llm.http": c.LLM.HTTP} {
		if h.Timeout <= 0 {
			bad(name+".timeout", "must be positive, got %s", h.Timeout)
		}
		if h.MaxRetries < 0 {
			bad(name+".max_retries", "must be 0 or more, got %d", h.MaxRetries)
		}
		if h.RatePerSec < 0 {
			bad(name+".rate_per_sec", "must be 0 (no limit) or more, got %g", h.RatePerSec)
		}
	}
	if c.Transcripts.Concurrency < 1 {
		bad("transcripts.concurrency", "must be at least 1, got %d", c.Transcripts.Concurrency)
	}
	if c.LLM.Concurrency < 1 {
		bad("llm.concurrency", "must be at least 1, got %d", c.LLM.Concurrency)
	}
	if c.LLM.MaxInvalidRetries < 0 {
		bad("llm.max_invalid_retries", "must be 0 or more, got %d", c.LLM.MaxInvalidRetries)
	}
	if !slices.Contains([]string{JSONModeAuto, JSONModeSchema, JSONModeObject, JSONModePrompt}, c.LLM.JSONMode) {
		bad("llm.json_mode", "%q: want auto, json_schema, json_object or prompt", c.LLM.JSONMode)
	}
	if c.Questions.MaxQuestions < 1 {
		bad("questions.max_questions", "must be at least 1, got %d", c.Questions.MaxQuestions)
	}
	d := c.Build.Dedup
	if d.Threshold <= 0 || d.Threshold > 1 {
		bad("build.dedup.threshold", "must be in (0, 1], got %g", d.Threshold)
	}
	if d.NGram < 1 {
		bad("build.dedup.ngram", "must be at least 1, got %d", d.NGram)
	}
	if d.NumHashes < 1 || d.Bands < 1 || d.NumHashes%d.Bands != 0 {
		bad("build.dedup", "bands (%d) must divide num_hashes (%d)", d.Bands, d.NumHashes)
	}
	if d.Field != dedupFieldQuestion && d.Field != dedupFieldQA {
		bad("build.dedup.field", "%q: want question or question_answer", d.Field)
	}
	s := c.Build.Split
	if s.Train < 0 || s.Valid < 0 || s.Test < 0 || s.Train+s.Valid+s.Test <= 0 {
		bad("build.split", "fractions must be 0 or more with a positive sum, got %g/%g/%g", s.Train, s.Valid, s.Test)
	}
	if c.Augment.Paraphrases < 0 {
		bad("augment.paraphrases", "must be 0 or more, got %d", c.Augment.Paraphrases)
	}
	for _, sp := range c.Augment.Splits {
		if !slices.Contains(splitNames, sp) {
			bad("augment.splits", "%q: want train, valid or test", sp)
		}
	}
	return errors.Join(errs...)
}

// OutDir returns the directory of the train/valid/test files.
func (c PipelineConfig) OutDir() string {
	if c.Build.OutDir != "" {
		return c.Build.OutDir
	}
	return filepath.Join(c.WorkDir, "dataset")
}

// DecodePipelineYAML reads the pipeline sub-sections of the data: section of
// a YAML run file, over the defaults. Keys inside the pipeline sub-sections
// are checked strictly: an unknown key is an error naming the key, the file
// and the line. Keys directly under data: that are not pipeline sub-sections
// (the training keys) and other top-level sections are ignored. A file
// without a data: section yields the defaults.
func DecodePipelineYAML(content []byte, file string) (PipelineConfig, error) {
	cfg := DefaultPipelineConfig()
	var doc yaml.Node
	if err := yaml.Unmarshal(content, &doc); err != nil {
		return cfg, fmt.Errorf("parse %s: %w", file, err)
	}
	if len(doc.Content) == 0 {
		return cfg, nil
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return cfg, fmt.Errorf("%s line %d: the top level must be a mapping", file, top.Line)
	}
	dataNode := mappingValue(top, "data")
	if dataNode == nil || dataNode.Tag == "!!null" {
		return cfg, nil
	}
	if dataNode.Kind != yaml.MappingNode {
		return cfg, fmt.Errorf("%s line %d: data: must be a mapping", file, dataNode.Line)
	}
	owned := map[string]reflect.StructField{}
	rt := reflect.TypeOf(cfg)
	for i := range rt.NumField() {
		f := rt.Field(i)
		owned[yamlName(f)] = f
	}
	rv := reflect.ValueOf(&cfg).Elem()
	for i := 0; i+1 < len(dataNode.Content); i += 2 {
		k, v := dataNode.Content[i], dataNode.Content[i+1]
		f, ok := owned[k.Value]
		if !ok {
			continue // a training key, or someone else's
		}
		where := "data." + k.Value
		if err := checkKnownKeys(v, f.Type, where, file); err != nil {
			return cfg, err
		}
		if err := v.Decode(rv.FieldByIndex(f.Index).Addr().Interface()); err != nil {
			return cfg, fmt.Errorf("%s: %s: %w", file, where, err)
		}
	}
	return cfg, nil
}

// SectionKeys are the pipeline's sub-sections of the run file's data:
// section (work_dir, transcripts, llm, ...): training leaves them to this
// package.
func SectionKeys() []string {
	var keys []string
	rt := reflect.TypeOf(PipelineConfig{})
	for i := range rt.NumField() {
		keys = append(keys, yamlName(rt.Field(i)))
	}
	return keys
}

func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// checkKnownKeys walks n against type t and reports the first mapping key
// that t has no field for.
func checkKnownKeys(n *yaml.Node, t reflect.Type, where, file string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Struct:
		if t == reflect.TypeOf(time.Duration(0)) || n.Kind != yaml.MappingNode {
			return nil // type errors are left to Decode, which names the line
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			if f.IsExported() {
				fields[yamlName(f)] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				return fmt.Errorf("%s line %d: unknown key %q in %s (known: %s)", file, k.Line, k.Value, where, strings.Join(slices.Sorted(maps.Keys(fields)), ", "))
			}
			if err := checkKnownKeys(n.Content[i+1], ft, where+"."+k.Value, file); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind == yaml.SequenceNode {
			for i, c := range n.Content {
				if err := checkKnownKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", where, i), file); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if err := checkKnownKeys(n.Content[i+1], t.Elem(), where+"."+n.Content[i].Value, file); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
