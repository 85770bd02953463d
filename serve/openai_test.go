package serve

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	openai "github.com/sashabaranov/go-openai"

	"github.com/fungtrain/fungtrain/llama"
)

func goClient(s *testServer, key string) *openai.Client {
	cfg := openai.DefaultConfig(key)
	cfg.BaseURL = s.url + "/v1"
	return openai.NewClientWithConfig(cfg)
}

// TestServeGoOpenAI serves SmolLM2 and asks through go-openai for a chat
// answer, a streamed chat answer (with usage), a raw completion and the
// model list; each answer equals the one-at-a-time greedy answer.
func TestServeGoOpenAI(t *testing.T) {
	q1 := []llama.Message{{Role: "user", Content: "What is the capital of France?"}}
	q2 := []llama.Message{{Role: "system", Content: "You answer in one short sentence."}, {Role: "user", Content: "Why do leaves change color?"}}
	refs := references(t, []refRequest{
		{messages: q1, maxTokens: 12},
		{messages: q2, maxTokens: 10},
		{prompt: "The three primary colors are", maxTokens: 8},
	})
	s := startServer(t, RunOptions{})
	c := goClient(s, "")
	ctx := context.Background()

	resp, err := c.CreateChatCompletion(ctx, openai.ChatCompletionRequest{
		Model:     "SmolLM2-135M-Instruct.Q4_1.gguf",
		Messages:  []openai.ChatCompletionMessage{{Role: "user", Content: q1[0].Content}},
		MaxTokens: 12,
	})
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if len(resp.Choices) != 1 || resp.Object != "chat.completion" || resp.Choices[0].Message.Role != "assistant" {
		t.Fatalf("chat response %+v", resp)
	}
	checkAnswer(t, "chat", resp.Choices[0].Message.Content, refs[0])
	if got := string(resp.Choices[0].FinishReason); got != refs[0].finish {
		t.Errorf("chat finish_reason %q, want %q", got, refs[0].finish)
	}
	if u := resp.Usage; u.PromptTokens != refs[0].promptTokens || u.CompletionTokens != len(refs[0].ids) || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Errorf("chat usage %+v, want %d prompt and %d completion tokens", u, refs[0].promptTokens, len(refs[0].ids))
	}

	stream, err := c.CreateChatCompletionStream(ctx, openai.ChatCompletionRequest{
		Messages: []openai.ChatCompletionMessage{
			{Role: "system", Content: q2[0].Content}, {Role: "user", Content: q2[1].Content}},
		MaxTokens:     10,
		Stream:        true,
		StreamOptions: &openai.StreamOptions{IncludeUsage: true},
	})
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	var text strings.Builder
	var finish string
	var usage *openai.Usage
	chunks := 0
	for {
		ch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		chunks++
		if ch.Object != "chat.completion.chunk" {
			t.Errorf("chunk object %q", ch.Object)
		}
		if chunks == 1 && (len(ch.Choices) != 1 || ch.Choices[0].Delta.Role != "assistant") {
			t.Errorf("first chunk %+v: want the assistant role", ch)
		}
		for _, c := range ch.Choices {
			text.WriteString(c.Delta.Content)
			if c.FinishReason != "" {
				finish = string(c.FinishReason)
			}
		}
		if ch.Usage != nil {
			if len(ch.Choices) != 0 {
				t.Errorf("usage chunk has choices: %+v", ch)
			}
			usage = ch.Usage
		}
	}
	stream.Close()
	checkAnswer(t, "streamed chat", text.String(), refs[1])
	if finish != refs[1].finish || chunks < len(refs[1].ids) {
		t.Errorf("stream: finish %q (want %q), %d chunks for %d tokens", finish, refs[1].finish, chunks, len(refs[1].ids))
	}
	if usage == nil || usage.PromptTokens != refs[1].promptTokens || usage.CompletionTokens != len(refs[1].ids) {
		t.Errorf("stream usage %+v, want %d prompt and %d completion tokens", usage, refs[1].promptTokens, len(refs[1].ids))
	}

	cresp, err := c.CreateCompletion(ctx, openai.CompletionRequest{Prompt: "The three primary colors are", MaxTokens: 8})
	if err != nil {
		t.Fatalf("completion: %v", err)
	}
	if len(cresp.Choices) != 1 || cresp.Object != "text_completion" {
		t.Fatalf("completion %+v", cresp)
	}
	checkAnswer(t, "completion", cresp.Choices[0].Text, refs[2])
	if cresp.Choices[0].FinishReason != refs[2].finish || cresp.Usage == nil || cresp.Usage.PromptTokens != refs[2].promptTokens {
		t.Errorf("completion finish %q usage %+v, want %q and %d prompt tokens", cresp.Choices[0].FinishReason, cresp.Usage, refs[2].finish, refs[2].promptTokens)
	}

	models, err := c.ListModels(ctx)
	if err != nil {
		t.Fatalf("models: %v", err)
	}
	var ids []string
	for _, m := range models.Models {
		ids = append(ids, m.ID)
	}
	if !slices.Equal(ids, []string{"SmolLM2-135M-Instruct.Q4_1.gguf"}) {
		t.Errorf("models %q", ids)
	}
}
