package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/serve"
)

func init() { subcommands = append(subcommands, newServeCmd) }

type serveFlags struct {
	model, dtype, dequantize, chatFormat string
	adapters                             []string
	host                                 string
	port                                 int
	maxBatch, queue, prefillChunk        int
	maxTokens                            int
	sample                               llama.SampleOptions
	apiKeyEnv                            string
	requestTimeout, shutdownTimeout      time.Duration
	maxBodyBytes                         int64
}

func newServeCmd() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve --model PATH [--adapter DIR | --adapter NAME=DIR ...] [--host 127.0.0.1] [--port 8080]",
		Short: "Serve a model (and LoRA adapters) over an OpenAI-compatible HTTP API",
		Long: `Serve answers POST /v1/chat/completions and /v1/completions (streamed or
whole), GET /v1/models and GET /health (503 while the model loads, then
{"status":"ok"}). Concurrent requests are decoded together (continuous
batching, up to --max-batch at a time; --queue more may wait, beyond which
requests get 429). The "model" field of a request picks the base model (its
file or directory name) or an adapter by NAME (--adapter DIR is named after
the directory). response_format json_object and json_schema are enforced by
constrained decoding. With --api-key-env VAR, every /v1 request must send
"Authorization: Bearer $VAR". SIGINT or SIGTERM stops accepting requests,
lets those in flight finish for --shutdown-timeout, then cancels them.`,
		Example: `  fungtrain serve --model third_party/models/SmolLM2-135M-Instruct.Q4_1.gguf --port 8080
  fungtrain serve --model models/llama-3.2-3b --adapter fung=runs/fung --adapter runs/other --api-key-env FUNGTRAIN_API_KEY`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runServe(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.model, "model", "", "model directory or .gguf file (required)")
	fl.StringArrayVar(&f.adapters, "adapter", nil, "LoRA adapter to serve, as DIR or NAME=DIR (repeatable)")
	fl.StringVar(&f.host, "host", "127.0.0.1", "address to listen on")
	fl.IntVar(&f.port, "port", 8080, "port to listen on (0: any free port)")
	fl.IntVar(&f.maxBatch, "max-batch", 16, "sequences decoded together")
	fl.IntVar(&f.queue, "queue", 64, "requests that may wait for a place in the batch (more get 429)")
	fl.IntVar(&f.prefillChunk, "prefill-chunk", 512, "prompt tokens prefilled between two decode steps")
	fl.IntVar(&f.maxTokens, "max-tokens", 512, "completion limit of requests that set none")
	fl.Float64Var(&f.sample.Temp, "temp", 0, "temperature of requests that set none (0: greedy)")
	fl.Float64Var(&f.sample.TopP, "top-p", 0, "top_p of requests that set none (0 or 1: off)")
	fl.IntVar(&f.sample.TopK, "top-k", 0, "top_k of requests that set none (0: off)")
	fl.Float64Var(&f.sample.MinP, "min-p", 0, "min_p of requests that set none (0: off)")
	fl.Float64Var(&f.sample.RepetitionPenalty, "repetition-penalty", 0, "repetition_penalty of requests that set none (0 or 1: off)")
	fl.Float64Var(&f.sample.FrequencyPenalty, "frequency-penalty", 0, "frequency_penalty of requests that set none, in [-2, 2] (0: off)")
	fl.Float64Var(&f.sample.PresencePenalty, "presence-penalty", 0, "presence_penalty of requests that set none, in [-2, 2] (0: off)")
	fl.StringVar(&f.apiKeyEnv, "api-key-env", "", "environment variable holding the API key clients must send (default: no key)")
	fl.DurationVar(&f.requestTimeout, "request-timeout", 10*time.Minute, "time limit of one request")
	fl.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long requests in flight may finish")
	fl.Int64Var(&f.maxBodyBytes, "max-body-bytes", 8<<20, "request body size limit")
	fl.StringVar(&f.chatFormat, "chat-format", "auto", "chat template: auto (the model's), llama3 or chatml")
	fl.StringVar(&f.dtype, "dtype", "auto", "activation dtype: auto, bf16, f16 or f32")
	fl.StringVar(&f.dequantize, "dequantize", "auto", "expand quantized weights at load: auto (on the CPU only), yes or no")
	return cmd
}

func runServe(cmd *cobra.Command, f serveFlags) error {
	if f.model == "" {
		return errors.New("serve: --model is required (a model directory or a .gguf file)")
	}
	if _, err := os.Stat(f.model); err != nil {
		return fmt.Errorf("serve: --model: %w", err)
	}
	if _, err := llama.ParseChatFormat(f.chatFormat); err != nil {
		return fmt.Errorf("serve: --chat-format: %w", err)
	}
	for _, c := range []struct {
		name string
		v    int
	}{{"--max-batch", f.maxBatch}, {"--queue", f.queue}, {"--prefill-chunk", f.prefillChunk}, {"--max-tokens", f.maxTokens}} {
		if c.v < 1 {
			return fmt.Errorf("serve: %s must be at least 1, got %d", c.name, c.v)
		}
	}
	if err := f.sample.Validate(); err != nil {
		return fmt.Errorf("serve: default sampling flags: %w", err)
	}
	var specs []serve.AdapterSpec
	for _, a := range f.adapters {
		sp, err := serve.ParseAdapterSpec(a)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		specs = append(specs, sp)
	}
	var key string
	if f.apiKeyEnv != "" {
		if key = os.Getenv(f.apiKeyEnv); key == "" {
			return fmt.Errorf("serve: --api-key-env %s: the environment variable is empty or not set", f.apiKeyEnv)
		}
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve.Run(ctx, serve.RunOptions{
		ModelPath: f.model,
		Load:      llama.LoadOptions{Dtype: f.dtype, Dequantize: f.dequantize, ChatFormat: f.chatFormat},
		Adapters:  specs,
		Addr:      net.JoinHostPort(f.host, strconv.Itoa(f.port)),
		Engine: llama.EngineOptions{QueueSize: f.queue,
			Batch: llama.BatchOptions{MaxBatch: f.maxBatch, PrefillChunk: f.prefillChunk}},
		ShutdownTimeout: f.shutdownTimeout,
		Server: serve.Options{MaxTokens: f.maxTokens, Sample: f.sample, RequestTimeout: f.requestTimeout,
			MaxBodyBytes: f.maxBodyBytes, APIKey: key},
	})
}
