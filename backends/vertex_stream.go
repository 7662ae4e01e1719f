package backends

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"google.golang.org/genai"
)

// This file translates Gemini answers into OpenAI chat.completion JSON and
// chat.completion.chunk events.

// translator holds the state of one answer: its ids, the tool calls numbered so far, the
// finish reason and the last usage.
type translator struct {
	id       string // random token shared by the completion id and its tool call ids
	created  int64
	model    string
	calls    int
	finished bool
	usage    *genai.GenerateContentResponseUsageMetadata
}

type oaFunction struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

type oaToolCallOut struct {
	Index    *int       `json:"index,omitempty"`
	ID       string     `json:"id,omitempty"`
	Type     string     `json:"type,omitempty"`
	Function oaFunction `json:"function"`
}

type oaDelta struct {
	Role             string          `json:"role,omitempty"`
	Content          *string         `json:"content,omitempty"`
	ReasoningContent string          `json:"reasoning_content,omitempty"`
	ToolCalls        []oaToolCallOut `json:"tool_calls,omitempty"`
}

type oaMessage struct {
	Role             string          `json:"role"`
	Content          *string         `json:"content"`
	ReasoningContent string          `json:"reasoning_content,omitempty"`
	ToolCalls        []oaToolCallOut `json:"tool_calls,omitempty"`
}

type oaChoice struct {
	Index        int        `json:"index"`
	Delta        *oaDelta   `json:"delta,omitempty"`
	Message      *oaMessage `json:"message,omitempty"`
	FinishReason *string    `json:"finish_reason"`
}

type oaUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

type oaCompletion struct {
	ID      string     `json:"id"`
	Object  string     `json:"object"`
	Created int64      `json:"created"`
	Model   string     `json:"model"`
	Choices []oaChoice `json:"choices"`
	Usage   *oaUsage   `json:"usage,omitempty"`
}

// mapUsage converts Gemini usage: prompt includes tool-use prompt tokens, completion
// includes thoughts, cached tokens are reported as prompt_tokens_details.cached_tokens.
func mapUsage(m *genai.GenerateContentResponseUsageMetadata) *oaUsage {
	if m == nil {
		return nil
	}
	u := &oaUsage{
		PromptTokens:     int(m.PromptTokenCount + m.ToolUsePromptTokenCount),
		CompletionTokens: int(m.CandidatesTokenCount + m.ThoughtsTokenCount),
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	u.PromptTokensDetails.CachedTokens = int(m.CachedContentTokenCount)
	u.CompletionTokensDetails.ReasoningTokens = int(m.ThoughtsTokenCount)
	return u
}

func (u *oaUsage) usage() *Usage {
	if u == nil {
		return nil
	}
	return &Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
}

// finishReason maps a Gemini finish reason; calls reports whether a tool call was emitted.
func finishReason(r genai.FinishReason, calls bool) string {
	switch r {
	case genai.FinishReasonMaxTokens:
		return "length"
	case genai.FinishReasonSafety, genai.FinishReasonRecitation, genai.FinishReasonBlocklist,
		genai.FinishReasonProhibitedContent, genai.FinishReasonSPII, genai.FinishReasonImageSafety,
		genai.FinishReasonImageProhibitedContent, genai.FinishReasonImageRecitation:
		return "content_filter"
	}
	if calls {
		return "tool_calls"
	}
	return "stop"
}

func (t *translator) completionID() string { return "chatcmpl-" + t.id }

// encodeJSON marshals without HTML escaping, so text reaches the client as written.
func encodeJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // only plain structs, strings and SDK maps
	return bytes.TrimRight(buf.Bytes(), "\n")
}

// toolCall makes the OpenAI tool call for a functionCall part.
func (t *translator) toolCall(p *genai.Part) oaToolCallOut {
	args := p.FunctionCall.Args
	if args == nil {
		args = map[string]any{}
	}
	n := t.calls
	t.calls++
	return oaToolCallOut{Index: &n, ID: toolCallID(t.id, n, p.ThoughtSignature), Type: "function",
		Function: oaFunction{Name: p.FunctionCall.Name, Arguments: string(encodeJSON(args))}}
}

func (t *translator) noteModel(r *genai.GenerateContentResponse) {
	if r != nil && r.ModelVersion != "" {
		t.model = r.ModelVersion
	}
}

func (t *translator) event(choices []oaChoice, usage *oaUsage) Event {
	if choices == nil {
		choices = []oaChoice{}
	}
	data := encodeJSON(oaCompletion{ID: t.completionID(), Object: "chat.completion.chunk", Created: t.created,
		Model: t.model, Choices: choices, Usage: usage})
	ev := Event{Data: data, Raw: append(append([]byte("data: "), data...), "\n\n"...)}
	InspectChunk(&ev)
	return ev
}

// roleChunk is the first chunk: the assistant role and empty content.
func (t *translator) roleChunk(first *genai.GenerateContentResponse) Event {
	t.noteModel(first)
	empty := ""
	return t.event([]oaChoice{{Delta: &oaDelta{Role: "assistant", Content: &empty}}}, nil)
}

// record translates one Gemini stream record into chunks: one per text, thought or
// function call part, then a finish chunk when the record carries a finish reason.
func (t *translator) record(r *genai.GenerateContentResponse) []Event {
	t.noteModel(r)
	if r.UsageMetadata != nil {
		t.usage = r.UsageMetadata // the last record's value is the total
	}
	var out []Event
	if t.finished {
		return out
	}
	if len(r.Candidates) == 0 {
		if r.PromptFeedback != nil && r.PromptFeedback.BlockReason != "" {
			out = append(out, t.finish("content_filter"))
		}
		return out
	}
	c := r.Candidates[0]
	if c.Content != nil {
		for _, p := range c.Content.Parts {
			switch {
			case p.FunctionCall != nil:
				out = append(out, t.event([]oaChoice{{Delta: &oaDelta{ToolCalls: []oaToolCallOut{t.toolCall(p)}}}}, nil))
			case p.Text == "":
			case p.Thought:
				out = append(out, t.event([]oaChoice{{Delta: &oaDelta{ReasoningContent: p.Text}}}, nil))
			default:
				text := p.Text
				out = append(out, t.event([]oaChoice{{Delta: &oaDelta{Content: &text}}}, nil))
			}
		}
	}
	if ae := badCall(c); ae != nil {
		// Gemini gave up on a tool call: an error event, which fails the attempt before
		// the first content and reaches the client in-band after it.
		t.finished = true
		data, _ := json.Marshal(ae)
		return append(out, Event{Data: data, Raw: append(append([]byte("data: "), data...), "\n\n"...), Err: ae})
	}
	if c.FinishReason != "" && c.FinishReason != genai.FinishReasonUnspecified {
		out = append(out, t.finish(finishReason(c.FinishReason, t.calls > 0)))
	}
	return out
}

// badCall returns the error for a candidate Gemini ended because it could not produce a
// valid tool call (MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL): an answer that would
// otherwise look like an empty "stop". It is a retryable 502.
func badCall(c *genai.Candidate) *APIError {
	if c.FinishReason != genai.FinishReasonMalformedFunctionCall && c.FinishReason != genai.FinishReasonUnexpectedToolCall {
		return nil
	}
	msg := "vertex: Gemini ended the answer with " + string(c.FinishReason)
	if c.FinishMessage != "" {
		msg += ": " + c.FinishMessage
	}
	return &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Code: strings.ToLower(string(c.FinishReason)),
		Message: msg, Backend: "vertex"}
}

func (t *translator) finish(reason string) Event {
	t.finished = true
	return t.event([]oaChoice{{Delta: &oaDelta{}, FinishReason: &reason}}, nil)
}

// tail is the usage chunk (no choices; withheld from clients that did not ask for usage)
// and [DONE].
func (t *translator) tail() []Event {
	var out []Event
	if u := mapUsage(t.usage); u != nil {
		out = append(out, t.event(nil, u))
	}
	done := []byte("data: [DONE]\n\n")
	return append(out, Event{Raw: done, Done: true})
}

// completion translates a unary GenerateContent answer into a chat.completion body; an
// answer Gemini ended on a malformed or unexpected tool call is an error (see badCall).
func (t *translator) completion(r *genai.GenerateContentResponse) ([]byte, *Usage, error) {
	t.noteModel(r)
	if len(r.Candidates) > 0 {
		if ae := badCall(r.Candidates[0]); ae != nil {
			return nil, nil, ae
		}
	}
	msg := &oaMessage{Role: "assistant"}
	reason := "stop"
	var text, thoughts strings.Builder
	if len(r.Candidates) > 0 {
		c := r.Candidates[0]
		if c.Content != nil {
			for _, p := range c.Content.Parts {
				switch {
				case p.FunctionCall != nil:
					tc := t.toolCall(p)
					tc.Index = nil
					msg.ToolCalls = append(msg.ToolCalls, tc)
				case p.Thought:
					thoughts.WriteString(p.Text)
				default:
					text.WriteString(p.Text)
				}
			}
		}
		reason = finishReason(c.FinishReason, t.calls > 0)
	} else if r.PromptFeedback != nil && r.PromptFeedback.BlockReason != "" {
		reason = "content_filter"
	}
	if text.Len() > 0 || len(msg.ToolCalls) == 0 {
		s := text.String()
		msg.Content = &s
	}
	msg.ReasoningContent = thoughts.String()
	u := mapUsage(r.UsageMetadata)
	body := encodeJSON(oaCompletion{ID: t.completionID(), Object: "chat.completion", Created: t.created, Model: t.model,
		Choices: []oaChoice{{Message: msg, FinishReason: &reason}}, Usage: u})
	return body, u.usage(), nil
}
