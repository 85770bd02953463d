package serve

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	openai "github.com/sashabaranov/go-openai"
)

// questionsSchema is the data pipeline's question schema (data/questions.go).
const questionsSchema = `{"type":"object","properties":{"questions":{"type":"array","items":{"type":"string"}}},"required":["questions"],"additionalProperties":false}`

// TestServeResponseFormat asks for JSON through go-openai: a schema with a
// token limit too short for the model's answer (the server closes the JSON
// in the tokens left and says finish_reason length), a streamed
// json_object, and a schema with an unsupported keyword (400).
func TestServeResponseFormat(t *testing.T) {
	s := startServer(t, RunOptions{})
	c := goClient(s, "")
	msgs := []openai.ChatCompletionMessage{
		{Role: "system", Content: `List questions a patient could ask about the text. Reply with JSON: {"questions": ["...", "..."]}`},
		{Role: "user", Content: "Fasting lowers insulin. When insulin falls, the body burns stored fat, and growth hormone rises."}}
	resp, err := c.CreateChatCompletion(t.Context(), openai.ChatCompletionRequest{Messages: msgs, MaxTokens: 14,
		ResponseFormat: &openai.ChatCompletionResponseFormat{Type: openai.ChatCompletionResponseFormatTypeJSONSchema,
			JSONSchema: &openai.ChatCompletionResponseFormatJSONSchema{Name: "questions", Schema: json.RawMessage(questionsSchema), Strict: true}}})
	if err != nil {
		t.Fatal(err)
	}
	text := resp.Choices[0].Message.Content
	var reply struct {
		Questions []string `json:"questions"`
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&reply); err != nil || reply.Questions == nil {
		t.Errorf("reply %q does not match the schema: %v", text, err)
	}
	if resp.Choices[0].FinishReason != openai.FinishReasonLength || resp.Usage.CompletionTokens > 14 {
		t.Errorf("finish %q with %d tokens; want length within 14 tokens", resp.Choices[0].FinishReason, resp.Usage.CompletionTokens)
	}
	t.Logf("14-token reply: %q", text)

	stream, err := c.CreateChatCompletionStream(t.Context(), openai.ChatCompletionRequest{
		Messages:       []openai.ChatCompletionMessage{{Role: "user", Content: "Describe a cat as a JSON object."}},
		MaxTokens:      40,
		ResponseFormat: &openai.ChatCompletionResponseFormat{Type: openai.ChatCompletionResponseFormatTypeJSONObject},
	})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for {
		ch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range ch.Choices {
			sb.WriteString(c.Delta.Content)
		}
	}
	stream.Close()
	var obj map[string]any
	if err := json.Unmarshal([]byte(sb.String()), &obj); err != nil {
		t.Errorf("streamed json_object %q: %v", sb.String(), err)
	}

	_, err = c.CreateChatCompletion(t.Context(), openai.ChatCompletionRequest{Messages: msgs,
		ResponseFormat: &openai.ChatCompletionResponseFormat{Type: openai.ChatCompletionResponseFormatTypeJSONSchema,
			JSONSchema: &openai.ChatCompletionResponseFormatJSONSchema{Name: "x", Schema: json.RawMessage(`{"type":"object","properties":{"q":{"type":"string","format":"email"}}}`)}}})
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 400 || !strings.Contains(apiErr.Message, `keyword "format" is not supported`) ||
		!strings.Contains(apiErr.Message, "$.properties.q") {
		t.Errorf("unsupported keyword: %v", err)
	}
}
