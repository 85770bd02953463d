package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

func init() { subcommands = append(subcommands, newGenerateCmd) }

type generateFlags struct {
	model, adapter       string
	prompt, messagesFile string
	system               string
	maxTokens            int
	temp, topP, minP     float64
	topK                 int
	repPenalty           float64
	repContext           int
	seed                 uint64
	stops                []string
	noChatTemplate       bool
	chatFormat           string
	dtype                string
	dequantize           string
	prefillChunk         int
}

func newGenerateCmd() *cobra.Command {
	var f generateFlags
	cmd := &cobra.Command{
		Use:   "generate --model PATH (--prompt TEXT | --messages FILE.json)",
		Short: "Generate text with a model (and optionally a LoRA adapter)",
		Long: `Generate streams a model's answer to a prompt to stdout, token by token,
then prints the prompt and generation speed and the peak memory to stderr,
as mlx_lm.generate does.

--model is an HF or MLX-community model directory (config.json,
*.safetensors, tokenizer.json, tokenizer_config.json) or a .gguf file.
The prompt is rendered with the model's chat template (Llama 3 or ChatML)
as a user message, after --system if given, unless --no-chat-template.
--messages takes a JSON list of {"role", "content"} objects instead.
Decoding is greedy at --temp 0 (the default); with --temp > 0 it samples,
filtered by --top-k, --top-p and --min-p. Generation ends at --max-tokens,
at an end-of-sequence or end-of-turn token, or when the text contains one
of the --stop strings (which is not printed).`,
		Example: `  fungtrain generate --model third_party/models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt "What is the capital of France?"
  fungtrain generate --model models/llama-3.2-3b --adapter runs/x/adapters --messages chat.json --temp 0.7 --top-p 0.9 --seed 1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("seed") {
				f.seed = uint64(time.Now().UnixNano())
			}
			return runGenerate(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.model, "model", "", "model directory or .gguf file (required)")
	fl.StringVar(&f.adapter, "adapter", "", "LoRA adapter directory to apply")
	fl.StringVar(&f.prompt, "prompt", "", `prompt text ("-" reads stdin)`)
	fl.StringVar(&f.messagesFile, "messages", "", `JSON file with a list of {"role", "content"} messages`)
	fl.StringVar(&f.system, "system", "", "system message put before the prompt")
	fl.IntVar(&f.maxTokens, "max-tokens", 256, "maximum number of tokens to generate")
	fl.Float64Var(&f.temp, "temp", 0, "sampling temperature (0 is greedy)")
	fl.Float64Var(&f.topP, "top-p", 0, "nucleus sampling: keep the most likely tokens up to this probability mass (0 or 1 disables)")
	fl.IntVar(&f.topK, "top-k", 0, "sample among the k most likely tokens (0 disables)")
	fl.Float64Var(&f.minP, "min-p", 0, "drop tokens less likely than this fraction of the most likely one (0 disables)")
	fl.Float64Var(&f.repPenalty, "repetition-penalty", 0, "penalty for tokens seen recently, e.g. 1.1 (0 or 1 disables)")
	fl.IntVar(&f.repContext, "repetition-context-size", 20, "how many recent tokens the repetition penalty sees")
	fl.Uint64Var(&f.seed, "seed", 0, "random seed for sampling (default: a new one each run)")
	fl.StringArrayVar(&f.stops, "stop", nil, "stop when the generated text contains this string (repeatable; not printed)")
	fl.BoolVar(&f.noChatTemplate, "no-chat-template", false, "encode the prompt as plain text instead of a chat")
	fl.StringVar(&f.chatFormat, "chat-format", "auto", "chat template: auto (the model's), llama3 or chatml")
	fl.StringVar(&f.dtype, "dtype", "auto", "activation and dense weight dtype: auto (f32 on the CPU, the checkpoint's on a GPU), bf16, f16 or f32")
	fl.StringVar(&f.dequantize, "dequantize", "auto", "expand quantized weights to dense at load: auto (on the CPU only), yes or no")
	fl.IntVar(&f.prefillChunk, "prefill-chunk", 512, "prompt tokens per prefill step")
	return cmd
}

// checkGenerateFlags validates the flags that do not need the model.
func checkGenerateFlags(f generateFlags) error {
	switch {
	case f.model == "":
		return errors.New("generate: --model is required (a model directory or a .gguf file)")
	case f.prompt == "" && f.messagesFile == "":
		return errors.New("generate: give --prompt TEXT or --messages FILE.json")
	case f.prompt != "" && f.messagesFile != "":
		return errors.New("generate: give either --prompt or --messages, not both")
	case f.maxTokens <= 0:
		return fmt.Errorf("generate: --max-tokens must be positive, got %d", f.maxTokens)
	case f.temp < 0:
		return fmt.Errorf("generate: --temp must be >= 0, got %g", f.temp)
	case f.topP < 0 || f.topP > 1:
		return fmt.Errorf("generate: --top-p must be in [0, 1], got %g", f.topP)
	case f.minP < 0 || f.minP > 1:
		return fmt.Errorf("generate: --min-p must be in [0, 1], got %g", f.minP)
	case f.topK < 0:
		return fmt.Errorf("generate: --top-k must be >= 0, got %d", f.topK)
	case f.repPenalty < 0:
		return fmt.Errorf("generate: --repetition-penalty must be >= 0, got %g", f.repPenalty)
	case f.prefillChunk <= 0:
		return fmt.Errorf("generate: --prefill-chunk must be positive, got %d", f.prefillChunk)
	}
	for _, s := range f.stops {
		if s == "" {
			return errors.New("generate: --stop strings must not be empty")
		}
	}
	if _, err := llama.ParseChatFormat(f.chatFormat); err != nil {
		return fmt.Errorf("generate: --chat-format: %w", err)
	}
	switch f.dtype {
	case "auto", "bf16", "f16", "f32":
	default:
		return fmt.Errorf("generate: --dtype %q: want auto, bf16, f16 or f32", f.dtype)
	}
	switch f.dequantize {
	case "auto", "yes", "no":
	default:
		return fmt.Errorf("generate: --dequantize %q: want auto, yes or no", f.dequantize)
	}
	return nil
}

// readMessages reads a chat as a JSON list of {"role", "content"} (or an
// object with such a list under "messages").
func readMessages(path string) ([]llama.Message, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--messages: %w", err)
	}
	var msgs []llama.Message
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		var obj struct {
			Messages []llama.Message `json:"messages"`
		}
		err = json.Unmarshal(b, &obj)
		msgs = obj.Messages
	} else {
		err = json.Unmarshal(b, &msgs)
	}
	if err != nil {
		return nil, fmt.Errorf("--messages %s: want a JSON list of {\"role\", \"content\"} objects: %w", path, err)
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("--messages %s: no messages", path)
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return nil, fmt.Errorf("--messages %s: message %d has role %q (want system, user or assistant)", path, i, m.Role)
		}
	}
	return msgs, nil
}

// promptMessages builds the conversation from --prompt or --messages and
// --system.
func promptMessages(cmd *cobra.Command, f generateFlags) ([]llama.Message, error) {
	var msgs []llama.Message
	if f.messagesFile != "" {
		var err error
		if msgs, err = readMessages(f.messagesFile); err != nil {
			return nil, err
		}
	} else {
		text := f.prompt
		if text == "-" {
			b, err := io.ReadAll(cmd.InOrStdin())
			if err != nil {
				return nil, fmt.Errorf("--prompt -: read stdin: %w", err)
			}
			text = string(b)
		}
		msgs = []llama.Message{{Role: "user", Content: text}}
	}
	if f.system != "" {
		if msgs[0].Role == "system" {
			return nil, errors.New("generate: --system given, but --messages already starts with a system message")
		}
		msgs = append([]llama.Message{{Role: "system", Content: f.system}}, msgs...)
	}
	return msgs, nil
}

func runGenerate(cmd *cobra.Command, f generateFlags) error {
	if err := checkGenerateFlags(f); err != nil {
		return err
	}
	if err := resolveModelArg(cmd.Context(), &f.model); err != nil {
		return err
	}
	msgs, err := promptMessages(cmd, f)
	if err != nil {
		return err
	}
	out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
	var st llama.GenerateStats
	err = mlx.Do(func() error {
		t0 := time.Now()
		b, err := llama.Open(f.model, llama.LoadOptions{Dtype: f.dtype, Dequantize: f.dequantize, ChatFormat: f.chatFormat})
		if err != nil {
			return err
		}
		defer b.Close()
		slog.Debug("model loaded", "path", f.model, "dtype", b.Model.Dtype, "seconds", time.Since(t0).Seconds(), "stop_ids", b.StopIDs)
		if f.adapter != "" {
			if err := applyAdapter(b.Model, f.adapter); err != nil {
				return err
			}
		}
		ids, err := b.EncodePrompt(msgs, !f.noChatTemplate)
		if err != nil {
			if !f.noChatTemplate {
				return fmt.Errorf("generate: %w (or pass --no-chat-template to encode the prompt as plain text)", err)
			}
			return fmt.Errorf("generate: %w", err)
		}
		opts := llama.GenerateOptions{
			MaxTokens:    f.maxTokens,
			StopIDs:      b.StopIDs,
			PrefillChunk: f.prefillChunk,
			Sample: llama.SampleOptions{
				Temp: f.temp, TopP: f.topP, TopK: f.topK, MinP: f.minP,
				RepetitionPenalty: f.repPenalty, RepetitionContext: f.repContext, Seed: f.seed,
			},
		}
		text := b.Tokenizer.NewTextStream(f.stops)
		var werr error
		write := func(s string) {
			if s != "" && werr == nil {
				_, werr = io.WriteString(out, s)
			}
		}
		st, err = b.Model.Generate(ids, opts, func(id int32) bool {
			piece, hit := text.Add(id)
			write(piece)
			return !hit && werr == nil
		})
		if err != nil {
			return err
		}
		write(text.Finish())
		write("\n")
		if werr != nil {
			return fmt.Errorf("generate: write output: %w", werr)
		}
		return nil
	})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(errw, "==========\nPrompt: %d tokens, %.3f tokens-per-sec\nGeneration: %d tokens, %.3f tokens-per-sec\nPeak memory: %.3f GB\n",
		st.PromptTokens, st.PromptTPS, st.GeneratedTokens, st.GenerationTPS, float64(st.PeakMemoryBytes)/1e9)
	return err
}
