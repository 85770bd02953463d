package serve

import (
	"encoding/json"
	"net/http"
	"strings"
)

// responder writes one request's answer: whole, or as server-sent events
// of chunks ending with "data: [DONE]".
type responder struct {
	w            http.ResponseWriter
	id, model    string
	created      int64
	chat         bool
	stream       bool
	includeUsage bool
	promptTokens int

	started bool
	text    strings.Builder
}

func (o *responder) usage(completion int) usage {
	return usage{PromptTokens: o.promptTokens, CompletionTokens: completion, TotalTokens: o.promptTokens + completion}
}

// start sends the event-stream headers and, for chat, the role chunk.
func (o *responder) start() error {
	h := o.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	o.w.WriteHeader(http.StatusOK)
	o.started = true
	if o.chat {
		empty := ""
		return o.event(o.chatChunk(chunkDelta{Role: "assistant", Content: &empty}, nil))
	}
	return o.flush()
}

// header is the opening fields of every object of this answer.
func (o *responder) header(object string) responseHeader {
	return responseHeader{ID: o.id, Object: object, Created: o.created, Model: o.model, SystemFingerprint: fingerprint}
}

func (o *responder) chatChunk(d chunkDelta, finish *string) chatChunk {
	return chatChunk{responseHeader: o.header("chat.completion.chunk"), Choices: []chunkChoice{{Index: 0, Delta: d, FinishReason: finish}}}
}

func (o *responder) completionChunk(text string, finish *string) completionResponse {
	return completionResponse{responseHeader: o.header("text_completion"), Choices: []completionChoice{{Text: text, Index: 0, FinishReason: finish}}}
}

// delta passes on new text.
func (o *responder) delta(text string) error {
	if !o.stream {
		o.text.WriteString(text)
		return nil
	}
	if o.chat {
		return o.event(o.chatChunk(chunkDelta{Content: &text}, nil))
	}
	return o.event(o.completionChunk(text, nil))
}

// end finishes the answer with its finish reason and usage.
func (o *responder) end(finish string, completion int) error {
	u := o.usage(completion)
	if !o.stream {
		if o.chat {
			writeJSON(o.w, http.StatusOK, chatResponse{responseHeader: o.header("chat.completion"), Usage: u,
				Choices: []chatChoice{{Index: 0, Message: assistantMessage{Role: "assistant", Content: o.text.String()}, FinishReason: finish}}})
		} else {
			writeJSON(o.w, http.StatusOK, completionResponse{responseHeader: o.header("text_completion"), Usage: &u,
				Choices: []completionChoice{{Text: o.text.String(), Index: 0, FinishReason: &finish}}})
		}
		return nil
	}
	var err error
	if o.chat {
		err = o.event(o.chatChunk(chunkDelta{}, &finish))
	} else {
		err = o.event(o.completionChunk("", &finish))
	}
	if err != nil {
		return err
	}
	if o.includeUsage {
		if o.chat {
			c := o.chatChunk(chunkDelta{}, nil)
			c.Choices, c.Usage = []chunkChoice{}, &u
			err = o.event(c)
		} else {
			c := o.completionChunk("", nil)
			c.Choices, c.Usage = []completionChoice{}, &u
			err = o.event(c)
		}
		if err != nil {
			return err
		}
	}
	return o.done()
}

// fail answers with an error: a JSON error body, or, once the stream has
// started, an error event (which OpenAI clients raise) and the end of the
// stream.
func (o *responder) fail(status int, typ, msg string) {
	if !o.started {
		writeError(o.w, status, typ, "", "", msg)
		return
	}
	_ = o.event(map[string]apiError{"error": {Message: msg, Type: typ}})
	_ = o.done()
}

func (o *responder) event(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := o.w.Write(append(append([]byte("data: "), b...), '\n', '\n')); err != nil {
		return err
	}
	return o.flush()
}

func (o *responder) done() error {
	if _, err := o.w.Write([]byte("data: [DONE]\n\n")); err != nil {
		return err
	}
	return o.flush()
}

func (o *responder) flush() error {
	return http.NewResponseController(o.w).Flush()
}
