package data

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
)

// File names of the build stage. PairsFile and BuildReportFile are in the
// work directory; the split files in the output directory.
const (
	PairsFile       = "pairs.jsonl"
	BuildReportFile = "build.report.json"
)

// SplitFile returns the file name of a split, e.g. "train.jsonl".
func SplitFile(split string) string { return split + ".jsonl" }

// ChatMessage is one turn of an mlx-lm chat example.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ChatExample is one line of train.jsonl, valid.jsonl or test.jsonl, in
// mlx-lm's chat format. Variant is set only on augmented examples.
type ChatExample struct {
	Messages []ChatMessage `json:"messages"`
	Variant  string        `json:"variant,omitempty"`
}

// Pair is one line of pairs.jsonl: a kept question/answer pair with its
// split and quality score. The augment stage reads it.
type Pair struct {
	ID       string  `json:"id"`
	VideoID  string  `json:"video_id"`
	Split    string  `json:"split"`
	Question string  `json:"question"`
	Answer   string  `json:"answer"`
	Score    float64 `json:"score"`
}

// SplitSummary describes one split in the build report.
type SplitSummary struct {
	File     string   `json:"file"`
	Examples int      `json:"examples"`
	Videos   []string `json:"videos"`
}

// BuildReport is written to build.report.json.
type BuildReport struct {
	Answers int `json:"answers"`
	Kept    int `json:"kept"`
	Quality struct {
		MinScore float64        `json:"min_score"`
		Dropped  int            `json:"dropped"`
		Scores   []QualityScore `json:"scores"`
	} `json:"quality"`
	Dedup struct {
		Config  DedupConfig `json:"config"`
		Exact   int         `json:"exact"`
		Near    int         `json:"near"`
		Removed []DupPair   `json:"removed"`
	} `json:"dedup"`
	Split        SplitConfig             `json:"split_config"`
	Splits       map[string]SplitSummary `json:"splits"`
	SystemPrompt bool                    `json:"system_prompt"`
	OutDir       string                  `json:"out_dir"`
}

// ErrNothingToBuild is wrapped by Build's error when there is no example
// to write: no answers, or none left after filtering.
var ErrNothingToBuild = errors.New("nothing to build")

// Build runs the build stage on answers.jsonl: quality scoring and
// filtering, duplicate removal, a split by video, then train/valid/test
// JSONL in mlx-lm's messages format. All outputs are written atomically and
// are a pure function of the inputs and the config.
func Build(ctx context.Context, cfg PipelineConfig, env Env) (*BuildReport, error) {
	log := env.logger().With("stage", "build")
	answers, err := loadAnswers(cfg.WorkDir, env)
	if err != nil {
		return nil, err
	}
	if len(answers) == 0 {
		return nil, fmt.Errorf("%w: %s is empty", ErrNothingToBuild, filepath.Join(cfg.WorkDir, AnswersFile))
	}
	seen := map[string]bool{}
	for i, a := range answers {
		if a.ID == "" || a.VideoID == "" {
			return nil, fmt.Errorf("%s line %d: id and video_id are required", AnswersFile, i+1)
		}
		if seen[a.ID] {
			return nil, fmt.Errorf("%s line %d: repeated id %q", AnswersFile, i+1, a.ID)
		}
		seen[a.ID] = true
	}
	bc := cfg.Build
	scorer, err := newQualityScorer(bc.Quality)
	if err != nil {
		return nil, err
	}
	rep := &BuildReport{Answers: len(answers), Split: bc.Split, Splits: map[string]SplitSummary{},
		SystemPrompt: bc.SystemPrompt != "", OutDir: cfg.OutDir()}
	rep.Quality.MinScore = bc.Quality.MinScore
	rep.Dedup.Config = bc.Dedup
	rep.Dedup.Removed = []DupPair{}

	// Quality.
	scores := make([]QualityScore, len(answers))
	var passed []int
	for i, a := range answers {
		scores[i] = scorer.score(a.ID, a.Question, a.Answer, a.Truncated)
		if scores[i].Score >= bc.Quality.MinScore {
			passed = append(passed, i)
		} else {
			rep.Quality.Dropped++
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// Duplicates.
	kept := passed
	if !bc.Dedup.Disabled {
		items := make([]DedupItem, len(passed))
		for k, i := range passed {
			text := answers[i].Question
			if bc.Dedup.Field == dedupFieldQA {
				text += "\n" + answers[i].Answer
			}
			items[k] = DedupItem{ID: answers[i].ID, Text: text, Score: scores[i].Score}
		}
		keep, pairs := Dedup(items, bc.Dedup)
		kept = nil
		for k, i := range passed {
			if keep[k] {
				kept = append(kept, i)
			}
		}
		for _, p := range pairs {
			if p.Kind == "exact" {
				rep.Dedup.Exact++
			} else {
				rep.Dedup.Near++
			}
		}
		rep.Dedup.Removed = pairs
	}
	for _, i := range kept {
		scores[i].Kept = true
	}
	rep.Quality.Scores = scores
	rep.Kept = len(kept)
	if len(kept) == 0 {
		return rep, fmt.Errorf("%w: no examples left after quality filtering and deduplication (see data.build.quality.min_score)", ErrNothingToBuild)
	}

	// Split by video.
	counts := map[string]int{}
	for _, i := range kept {
		counts[answers[i].VideoID]++
	}
	assign := splitVideos(counts, bc.Split)
	outDir := cfg.OutDir()
	var pairs []Pair
	bySplit := map[string][]ChatExample{}
	for _, i := range kept {
		a := answers[i]
		sp := assign[a.VideoID]
		pairs = append(pairs, Pair{ID: a.ID, VideoID: a.VideoID, Split: sp, Question: a.Question, Answer: a.Answer, Score: scores[i].Score})
		bySplit[sp] = append(bySplit[sp], chatExample(bc.SystemPrompt, a.Question, a.Answer, ""))
	}
	for _, sp := range splitNames {
		var vids []string
		for v, s := range assign {
			if s == sp {
				vids = append(vids, v)
			}
		}
		slices.Sort(vids)
		if vids == nil {
			vids = []string{}
		}
		path := filepath.Join(outDir, SplitFile(sp))
		rep.Splits[sp] = SplitSummary{File: path, Examples: len(bySplit[sp]), Videos: vids}
		if len(bySplit[sp]) == 0 {
			log.Warn("split is empty", "split", sp)
		}
		if err := writeJSONLAtomic(path, bySplit[sp]); err != nil {
			return rep, err
		}
	}
	if err := writeJSONLAtomic(filepath.Join(cfg.WorkDir, PairsFile), pairs); err != nil {
		return rep, err
	}
	if err := writeJSONAtomic(filepath.Join(cfg.WorkDir, BuildReportFile), rep); err != nil {
		return rep, err
	}
	log.Info("done", "answers", len(answers), "dropped_quality", rep.Quality.Dropped, "exact_duplicates", rep.Dedup.Exact,
		"near_duplicates", rep.Dedup.Near, "kept", len(kept), "train", rep.Splits["train"].Examples,
		"valid", rep.Splits["valid"].Examples, "test", rep.Splits["test"].Examples, "out_dir", outDir)
	return rep, nil
}

func chatExample(system, question, answer, variant string) ChatExample {
	var msgs []ChatMessage
	if system != "" {
		msgs = append(msgs, ChatMessage{Role: "system", Content: system})
	}
	msgs = append(msgs, ChatMessage{Role: "user", Content: question}, ChatMessage{Role: "assistant", Content: answer})
	return ChatExample{Messages: msgs, Variant: variant}
}
