package handlers

import (
	"encoding/json"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

// estimateJSONUsage guesses the usage of a JSON answer that carried none: the prompt from
// the request body's size, the completion from the text, reasoning and tool-call arguments
// of its choices, at about 4 bytes a token.
func estimateJSONUsage(promptBytes int, body []byte) *backends.Usage {
	var ans struct {
		Choices []struct {
			Message struct {
				Content   json.RawMessage `json:"content"`
				Reasoning string          `json:"reasoning"`
				ToolCalls []struct {
					Function struct {
						Arguments string `json:"arguments"`
					} `json:"function"`
				} `json:"tool_calls"`
			} `json:"message"`
		} `json:"choices"`
	}
	_ = json.Unmarshal(body, &ans)
	n := 0
	for _, c := range ans.Choices {
		m := c.Message
		n += len(backends.ContentText(m.Content, 0)) + len(m.Reasoning)
		for _, tc := range m.ToolCalls {
			n += len(tc.Function.Arguments)
		}
	}
	u := &backends.Usage{PromptTokens: promptBytes / 4, CompletionTokens: (n + 3) / 4}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}
