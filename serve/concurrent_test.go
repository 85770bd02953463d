package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	openai "github.com/sashabaranov/go-openai"

	"github.com/fungtrain/fungtrain/llama"
)

// TestServeConcurrent sends 16 requests at once, with different prompts and
// settings (token limits, stop strings, seeded sampling, a repetition
// penalty, streamed and not), to a server that decodes 6 at a time, so
// requests queue, join and leave the batch. Every answer equals its
// one-at-a-time answer (greedy ones up to a near tie): nothing is lost,
// duplicated or mixed between requests.
func TestServeConcurrent(t *testing.T) {
	topics := []string{"the moon", "bread", "rivers", "chess", "owls", "glass", "tea", "volcanoes",
		"bicycles", "honey", "snow", "maps", "violins", "salt", "clocks", "whales"}
	type client struct {
		ref    refRequest
		stream bool
		seed   *int
	}
	var clients []client
	for i, topic := range topics {
		rq := refRequest{messages: []llama.Message{{Role: "user", Content: fmt.Sprintf("Tell me one fact about %s.", topic)}},
			maxTokens: 3 + i%5}
		c := client{ref: rq, stream: i%3 == 1}
		switch i % 4 {
		case 1:
			c.ref.stops = []string{" is", "."}
		case 2:
			seed := 100 + i
			c.seed = &seed
			c.ref.sample = llama.SampleOptions{Temp: 0.8, TopP: 0.95, Seed: uint64(seed)}
		case 3:
			c.ref.sample = llama.SampleOptions{RepetitionPenalty: 1.3}
		}
		clients = append(clients, c)
	}
	reqs := make([]refRequest, len(clients))
	for i, c := range clients {
		reqs[i] = c.ref
	}
	refs := references(t, reqs)
	s := startServer(t, RunOptions{Engine: llama.EngineOptions{Batch: llama.BatchOptions{MaxBatch: 6}}})
	c := goClient(s, "")

	answers := make([]string, len(clients))
	finishes := make([]string, len(clients))
	usages := make([]openai.Usage, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := openai.ChatCompletionRequest{
				Messages:    []openai.ChatCompletionMessage{{Role: "user", Content: cl.ref.messages[0].Content}},
				MaxTokens:   cl.ref.maxTokens,
				Stop:        cl.ref.stops,
				Temperature: float32(cl.ref.sample.Temp),
				TopP:        float32(cl.ref.sample.TopP),
				Seed:        cl.seed,
			}
			answers[i], finishes[i], usages[i], errs[i] = ask(s, c, req, cl.stream, cl.ref.sample.RepetitionPenalty)
		}()
	}
	wg.Wait()
	for i := range clients {
		name := fmt.Sprintf("client %d (%q, stream %v, %+v, stops %q)", i, topics[i], clients[i].stream, clients[i].ref.sample, clients[i].ref.stops)
		if errs[i] != nil {
			t.Errorf("%s: %v", name, errs[i])
			continue
		}
		checkAnswer(t, name, answers[i], refs[i])
		if answers[i] == refs[i].text && finishes[i] != refs[i].finish {
			t.Errorf("%s: finish %q, want %q", name, finishes[i], refs[i].finish)
		}
		if usages[i].PromptTokens != refs[i].promptTokens {
			t.Errorf("%s: %d prompt tokens, want %d", name, usages[i].PromptTokens, refs[i].promptTokens)
		}
	}
}

// ask sends one chat request, streamed or not, and returns the answer.
// go-openai has no repetition_penalty field: such requests go as plain
// JSON.
func ask(s *testServer, c *openai.Client, req openai.ChatCompletionRequest, stream bool, repPenalty float64) (string, string, openai.Usage, error) {
	ctx := context.Background()
	if repPenalty != 0 {
		return askRaw(s, req, repPenalty)
	}
	if !stream {
		resp, err := c.CreateChatCompletion(ctx, req)
		if err != nil {
			return "", "", openai.Usage{}, err
		}
		if len(resp.Choices) != 1 {
			return "", "", openai.Usage{}, fmt.Errorf("%d choices", len(resp.Choices))
		}
		return resp.Choices[0].Message.Content, string(resp.Choices[0].FinishReason), resp.Usage, nil
	}
	req.Stream = true
	req.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
	st, err := c.CreateChatCompletionStream(ctx, req)
	if err != nil {
		return "", "", openai.Usage{}, err
	}
	defer st.Close()
	var sb strings.Builder
	var finish string
	var u openai.Usage
	for {
		ch, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return sb.String(), finish, u, nil
		}
		if err != nil {
			return "", "", u, err
		}
		for _, c := range ch.Choices {
			sb.WriteString(c.Delta.Content)
			if c.FinishReason != "" {
				finish = string(c.FinishReason)
			}
		}
		if ch.Usage != nil {
			u = *ch.Usage
		}
	}
}

// askRaw posts a non-streamed chat request with a repetition penalty.
func askRaw(s *testServer, req openai.ChatCompletionRequest, repPenalty float64) (string, string, openai.Usage, error) {
	body := map[string]any{"messages": req.Messages, "max_tokens": req.MaxTokens, "repetition_penalty": repPenalty}
	if len(req.Stop) > 0 {
		body["stop"] = req.Stop
	}
	var resp openai.ChatCompletionResponse
	status, err := postJSON(s.url+"/v1/chat/completions", "", body, &resp)
	if err != nil {
		return "", "", openai.Usage{}, err
	}
	if status != 200 || len(resp.Choices) != 1 {
		return "", "", openai.Usage{}, fmt.Errorf("status %d, %d choices", status, len(resp.Choices))
	}
	return resp.Choices[0].Message.Content, string(resp.Choices[0].FinishReason), resp.Usage, nil
}

// postJSON posts v as JSON (with a bearer key if not empty) and decodes the
// answer into out.
func postJSON(url, key string, v, out any) (int, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequest("POST", url, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("status %d: %w: %s", resp.StatusCode, err, data)
		}
	}
	return resp.StatusCode, nil
}
