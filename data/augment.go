package data

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

// File names of the augment stage, in the work directory.
const (
	AugmentFile       = "augment.jsonl"
	AugmentLogFile    = "augment.log.jsonl"
	AugmentReportFile = "augment.report.json"
)

// Variant kinds, the value of the variant field.
const (
	VariantParaphrase  = "paraphrase"
	VariantShortAnswer = "short_answer"
)

// Variant is one line of augment.jsonl. ID is the source id plus "-p1",
// "-p2", ... for paraphrases and "-s1" for the short answer. A variant
// always has its source's split.
type Variant struct {
	ID       string `json:"id"`
	SourceID string `json:"source_id"`
	VideoID  string `json:"video_id"`
	Split    string `json:"split"`
	Variant  string `json:"variant"`
	Question string `json:"question"`
	Answer   string `json:"answer"`
}

// augmentLogEntry is one line of the augment journal: the result of one
// task (paraphrases or short answer of one pair). Hash covers the source
// pair, so a changed pair is redone.
type augmentLogEntry struct {
	SourceID string `json:"source_id"`
	Kind     string `json:"kind"`
	Hash     string `json:"hash"`
	// N is the number of paraphrases asked for; raising
	// augment.paraphrases redoes the entry.
	N     int      `json:"n,omitempty"`
	Items []string `json:"items"`
}

// AugmentReport is written to augment.report.json.
type AugmentReport struct {
	StageReport
	Variants map[string]int `json:"variants_per_split"`
}

var paraphraseSchema = json.RawMessage(`{"type":"object","properties":{"paraphrases":{"type":"array","items":{"type":"string"}}},"required":["paraphrases"],"additionalProperties":false}`)

type augmentTask struct {
	pair Pair
	kind string
}

// Augment runs the augment stage on pairs.jsonl (written by Build): for
// each pair of the splits in augment.splits, question paraphrases and a
// short-answer variant. The split files of those splits are then rewritten
// with each source example followed by its variants, so a variant never
// leaves its source's split.
func Augment(ctx context.Context, cfg PipelineConfig, env Env, opt StageOptions) (*AugmentReport, error) {
	log := env.logger().With("stage", "augment")
	ac := cfg.Augment
	pairsPath := filepath.Join(cfg.WorkDir, PairsFile)
	pairs, err := readJSONL[Pair](pairsPath, log)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no pairs: run `fungtrain data build` first", pairsPath)
	}
	if err != nil {
		return nil, err
	}
	para, err := loadPrompts("augment.paraphrase_prompt", ac.ParaphrasePrompt, DefaultParaphraseSystem, DefaultParaphraseUser,
		AugmentPromptData{Question: "q", Answer: "a", N: 1})
	if err != nil {
		return nil, err
	}
	short, err := loadPrompts("augment.short_answer_prompt", ac.ShortAnswerPrompt, DefaultShortAnswerSystem, DefaultShortAnswerUser,
		AugmentPromptData{Question: "q", Answer: "a", N: 1})
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(cfg.WorkDir, AugmentLogFile)
	key := func(id, kind string) string { return id + "\x00" + kind }
	entries, j, err := loadEntries(logPath, opt.Force, log, func(e augmentLogEntry) string { return key(e.SourceID, e.Kind) })
	if err != nil {
		return nil, err
	}
	var tasks []augmentTask
	for _, p := range pairs {
		if !slices.Contains(ac.Splits, p.Split) {
			continue
		}
		if ac.Paraphrases > 0 {
			tasks = append(tasks, augmentTask{p, VariantParaphrase})
		}
		if ac.ShortAnswers {
			tasks = append(tasks, augmentTask{p, VariantShortAnswer})
		}
	}
	pairHash := func(p Pair) string { return shortHash(p.Question + "\x00" + p.Answer) }
	rep := &AugmentReport{StageReport: StageReport{Stage: "augment", Items: len(tasks), Output: filepath.Join(cfg.WorkDir, AugmentFile),
		Failed: []ItemFailure{}}, Variants: map[string]int{}}
	var todo []augmentTask
	for _, t := range tasks {
		if e, ok := entries[key(t.pair.ID, t.kind)]; ok && e.Hash == pairHash(t.pair) && (t.kind != VariantParaphrase || e.N >= ac.Paraphrases) {
			rep.AlreadyDone++
			continue
		}
		todo = append(todo, t)
	}
	log.Info("starting", "pairs", len(pairs), "tasks", len(tasks), "already_done", rep.AlreadyDone, "to_generate", len(todo))
	run, err := startStage(cfg.LLM, env, log, &rep.StageReport, j, len(todo), concurrencyOf(ac.Concurrency, cfg.LLM))
	if err != nil {
		return nil, err
	}
	llm := run.llm
	bar := env.bar("augment", len(todo))
	runErr := forEach(ctx, concurrencyOf(ac.Concurrency, cfg.LLM), len(todo), func(ctx context.Context, k int) error {
		defer bar.Add(1)
		t := todo[k]
		data := AugmentPromptData{Question: t.pair.Question, Answer: t.pair.Answer, N: ac.Paraphrases}
		var items []string
		var err error
		switch t.kind {
		case VariantParaphrase:
			sys, usr, rerr := para.render(data)
			if rerr != nil {
				return rerr
			}
			err = llm.chatJSON(ctx, sys, usr, "paraphrases", paraphraseSchema, func(b []byte) error {
				var perr error
				items, perr = parseParaphrases(b, t.pair.Question, ac.Paraphrases)
				return perr
			})
		case VariantShortAnswer:
			sys, usr, rerr := short.render(data)
			if rerr != nil {
				return rerr
			}
			var text string
			text, _, err = llm.chatText(ctx, sys, usr, func(s string) (string, error) {
				s, err := checkAnswer(s)
				if err != nil {
					return "", err
				}
				if utf8.RuneCountInString(s) >= utf8.RuneCountInString(t.pair.Answer) {
					return "", errors.New("the short answer is not shorter than the answer")
				}
				return s, nil
			})
			items = []string{text}
		}
		if err != nil {
			return run.failed(ctx, t.pair.ID+"/"+t.kind, err, "no variant", "id", t.pair.ID, "kind", t.kind)
		}
		e := augmentLogEntry{SourceID: t.pair.ID, Kind: t.kind, Hash: pairHash(t.pair), Items: items}
		if t.kind == VariantParaphrase {
			e.N = ac.Paraphrases
		}
		return run.succeeded(j, e, func() { entries[key(t.pair.ID, t.kind)] = e })
	})
	bar.Finish()
	if err := finishStage(ctx, &rep.StageReport, j, llm, true, runErr); err != nil {
		return rep, err
	}

	// Variants in pair order, and the rewritten split files.
	var variants []Variant
	bySplit := map[string][]ChatExample{}
	sys := cfg.Build.SystemPrompt
	for _, p := range pairs {
		bySplit[p.Split] = append(bySplit[p.Split], chatExample(sys, p.Question, p.Answer, ""))
		if !slices.Contains(ac.Splits, p.Split) {
			continue
		}
		if e, ok := entries[key(p.ID, VariantParaphrase)]; ok && ac.Paraphrases > 0 && e.Hash == pairHash(p) {
			for i, q := range e.Items[:min(len(e.Items), ac.Paraphrases)] {
				v := Variant{ID: fmt.Sprintf("%s-p%d", p.ID, i+1), SourceID: p.ID, VideoID: p.VideoID, Split: p.Split,
					Variant: VariantParaphrase, Question: q, Answer: p.Answer}
				variants = append(variants, v)
				bySplit[p.Split] = append(bySplit[p.Split], chatExample(sys, v.Question, v.Answer, v.Variant))
			}
		}
		if e, ok := entries[key(p.ID, VariantShortAnswer)]; ok && ac.ShortAnswers && e.Hash == pairHash(p) && len(e.Items) == 1 {
			v := Variant{ID: p.ID + "-s1", SourceID: p.ID, VideoID: p.VideoID, Split: p.Split,
				Variant: VariantShortAnswer, Question: p.Question, Answer: e.Items[0]}
			variants = append(variants, v)
			bySplit[p.Split] = append(bySplit[p.Split], chatExample(sys, v.Question, v.Answer, v.Variant))
		}
	}
	for _, v := range variants {
		rep.Variants[v.Split]++
	}
	rep.OutputRecords = len(variants)
	sortFailures(rep.Failed)
	if err := writeJSONLAtomic(rep.Output, variants); err != nil {
		return rep, err
	}
	for _, sp := range ac.Splits {
		if err := writeJSONLAtomic(filepath.Join(cfg.OutDir(), SplitFile(sp)), bySplit[sp]); err != nil {
			return rep, err
		}
	}
	if err := writeJSONAtomic(filepath.Join(cfg.WorkDir, AugmentReportFile), rep); err != nil {
		return rep, err
	}
	log.Info("done", "generated", rep.Generated, "failed", len(rep.Failed), "variants", len(variants),
		"splits", strings.Join(ac.Splits, ","))
	return rep, nil
}

// parseParaphrases validates a paraphrases reply: strings, not equal to the
// source or to each other once normalised; at least one; at most n kept.
func parseParaphrases(b []byte, source string, n int) ([]string, error) {
	var reply struct {
		Paraphrases *[]string `json:"paraphrases"`
	}
	if err := json.Unmarshal(b, &reply); err != nil {
		return nil, fmt.Errorf("decode paraphrases reply: %w", err)
	}
	if reply.Paraphrases == nil {
		return nil, errors.New(`reply has no "paraphrases" list`)
	}
	seen := map[string]bool{normalizeText(source): true}
	var out []string
	for _, p := range *reply.Paraphrases {
		p = strings.TrimSpace(listMarkerRE.ReplaceAllString(strings.TrimSpace(p), ""))
		k := normalizeText(p)
		if p == "" || seen[k] || strings.EqualFold(p, source) {
			continue
		}
		seen[k] = true
		out = append(out, p)
		if len(out) == n {
			break
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no paraphrase that differs from the question")
	}
	return out, nil
}
