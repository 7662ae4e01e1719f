package backends

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genai"
)

// schemaJSON is the cleaned schema as it goes over the wire.
func schemaJSON(t *testing.T, in string) map[string]any {
	t.Helper()
	s, err := CleanSchema(json.RawMessage(in))
	if err != nil {
		t.Fatalf("CleanSchema: %v", err)
	}
	b, _ := json.Marshal(s)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func TestCleanSchema(t *testing.T) {
	str := map[string]any{"type": "STRING"}
	tests := []struct {
		name string
		in   string
		want map[string]any
	}{
		{"roo strict tool: strict, additionalProperties and $schema removed",
			`{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"path":{"type":"string","description":"File path"}},"required":["path"],"additionalProperties":false,"strict":true}`,
			map[string]any{"type": "OBJECT", "required": []any{"path"},
				"properties": map[string]any{"path": map[string]any{"type": "STRING", "description": "File path"}}}},
		{"nullable union type array",
			`{"type":"object","properties":{"cwd":{"type":["string","null"]}},"required":["cwd"],"additionalProperties":false}`,
			map[string]any{"type": "OBJECT", "required": []any{"cwd"},
				"properties": map[string]any{"cwd": map[string]any{"type": "STRING", "nullable": true}}}},
		{"anyOf with null becomes nullable",
			`{"type":"object","properties":{"n":{"anyOf":[{"type":"integer"},{"type":"null"}],"description":"count"}}}`,
			map[string]any{"type": "OBJECT",
				"properties": map[string]any{"n": map[string]any{"type": "INTEGER", "nullable": true, "description": "count"}}}},
		{"nested objects",
			`{"type":"object","properties":{"opts":{"type":"object","properties":{"deep":{"type":"object","properties":{"x":{"type":"boolean"}},"additionalProperties":false}},"additionalProperties":false}}}`,
			map[string]any{"type": "OBJECT", "properties": map[string]any{"opts": map[string]any{"type": "OBJECT",
				"properties": map[string]any{"deep": map[string]any{"type": "OBJECT",
					"properties": map[string]any{"x": map[string]any{"type": "BOOLEAN"}}}}}}}},
		{"array of objects (Roo's ask_followup_question)",
			`{"type":"object","properties":{"follow_up":{"type":"array","items":{"type":"object","properties":{"text":{"type":"string"},"mode":{"type":["string","null"]}},"required":["text","mode"],"additionalProperties":false}}},"required":["follow_up"],"additionalProperties":false}`,
			map[string]any{"type": "OBJECT", "required": []any{"follow_up"}, "properties": map[string]any{
				"follow_up": map[string]any{"type": "ARRAY", "items": map[string]any{"type": "OBJECT", "required": []any{"text", "mode"},
					"properties": map[string]any{"text": str, "mode": map[string]any{"type": "STRING", "nullable": true}}}}}}},
		{"local $ref inlined",
			`{"type":"object","properties":{"item":{"$ref":"#/$defs/Item"}},"$defs":{"Item":{"type":"object","properties":{"id":{"type":"integer"}}}}}`,
			map[string]any{"type": "OBJECT", "properties": map[string]any{"item": map[string]any{"type": "OBJECT",
				"properties": map[string]any{"id": map[string]any{"type": "INTEGER"}}}}}},
		{"multi-type union becomes anyOf",
			`{"type":"object","properties":{"v":{"type":["string","number"]}}}`,
			map[string]any{"type": "OBJECT", "properties": map[string]any{"v": map[string]any{
				"anyOf": []any{str, map[string]any{"type": "NUMBER"}}}}}},
		{"enum with null, unsupported format, missing type, unknown required",
			`{"type":"object","properties":{"mode":{"enum":["a","b",null]},"url":{"type":"string","format":"uri"},"when":{"type":"string","format":"date-time"},"any":{}},"required":["mode","ghost"]}`,
			map[string]any{"type": "OBJECT", "required": []any{"mode"}, "properties": map[string]any{
				"mode": map[string]any{"type": "STRING", "enum": []any{"a", "b"}, "nullable": true},
				"url":  str,
				"when": map[string]any{"type": "STRING", "format": "date-time"},
				"any":  str}}},
		{"properties without type get OBJECT, items without type get ARRAY",
			`{"properties":{"list":{"items":{"type":"string"},"minItems":1}}}`,
			map[string]any{"type": "OBJECT", "properties": map[string]any{"list": map[string]any{
				"type": "ARRAY", "items": str, "minItems": 1.0}}}},
		{"recursive $ref stops",
			`{"type":"object","properties":{"node":{"$ref":"#"}}}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := schemaJSON(t, tt.in)
			if tt.want == nil {
				return // only: no hang, no crash
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// translate runs the request translation on a body.
func translate(t *testing.T, body, model string) ([]*genai.Content, *genai.GenerateContentConfig, error) {
	t.Helper()
	return translateRequest(context.Background(), slog.New(slog.DiscardHandler), nil, mustParse(t, []byte(body)), model)
}

func TestTranslateGenerationOptions(t *testing.T) {
	f32 := func(f float32) *float32 { return &f }
	i32 := func(i int32) *int32 { return &i }
	tests := []struct {
		name  string
		extra string
		model string
		want  *genai.GenerateContentConfig
	}{
		{"sampling, stop string, seed, max_tokens", `"temperature":0.2,"top_p":0.9,"stop":"END","seed":7,"max_tokens":100`, "gemini-2.0-flash",
			&genai.GenerateContentConfig{Temperature: f32(0.2), TopP: f32(0.9), StopSequences: []string{"END"}, Seed: i32(7), MaxOutputTokens: 100}},
		{"max_completion_tokens wins, stop array", `"max_tokens":100,"max_completion_tokens":300,"stop":["a","b"]`, "gemini-2.0-flash",
			&genai.GenerateContentConfig{MaxOutputTokens: 300, StopSequences: []string{"a", "b"}}},
		{"json_object", `"response_format":{"type":"json_object"}`, "gemini-2.0-flash",
			&genai.GenerateContentConfig{ResponseMIMEType: "application/json"}},
		{"json_schema", `"response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}}}`, "gemini-2.0-flash",
			&genai.GenerateContentConfig{ResponseMIMEType: "application/json", ResponseSchema: &genai.Schema{Type: genai.TypeObject,
				Properties: map[string]*genai.Schema{"a": {Type: genai.TypeString}}}}},
		{"reasoning_effort high", `"reasoning_effort":"high"`, "gemini-2.5-pro",
			&genai.GenerateContentConfig{ThinkingConfig: &genai.ThinkingConfig{IncludeThoughts: true, ThinkingBudget: i32(24576)}}},
		{"reasoning_effort none on flash", `"reasoning_effort":"none"`, "gemini-2.5-flash",
			&genai.GenerateContentConfig{ThinkingConfig: &genai.ThinkingConfig{ThinkingBudget: i32(0)}}},
		{"thinking model without effort shows thoughts", ``, "gemini-2.5-pro",
			&genai.GenerateContentConfig{ThinkingConfig: &genai.ThinkingConfig{IncludeThoughts: true}}},
		{"reasoning_effort dropped for a model without thinking", `"reasoning_effort":"high"`, "gemini-2.0-flash",
			&genai.GenerateContentConfig{}},
		{"unsupported fields dropped", `"logprobs":true,"user":"u1","n":1,"parallel_tool_calls":true,"logit_bias":{"1":2}`, "gemini-2.0-flash",
			&genai.GenerateContentConfig{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"model":"x","messages":[{"role":"user","content":"hi"}]`
			if tt.extra != "" {
				body += "," + tt.extra
			}
			_, cfg, err := translate(t, body+"}", tt.model)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, cfg); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestTranslateToolChoice(t *testing.T) {
	tools := `"tools":[{"type":"function","function":{"name":"read_file","parameters":{"type":"object","properties":{"path":{"type":"string"}}}}},` +
		`{"type":"function","function":{"name":"list_files","parameters":{"type":"object","properties":{}}}}]`
	tests := []struct {
		choice string
		want   *genai.FunctionCallingConfig
	}{
		{`"none"`, &genai.FunctionCallingConfig{Mode: genai.FunctionCallingConfigModeNone}},
		{`"auto"`, &genai.FunctionCallingConfig{Mode: genai.FunctionCallingConfigModeAuto}},
		{`"required"`, &genai.FunctionCallingConfig{Mode: genai.FunctionCallingConfigModeAny}},
		{`{"type":"function","function":{"name":"read_file"}}`, &genai.FunctionCallingConfig{Mode: genai.FunctionCallingConfigModeAny, AllowedFunctionNames: []string{"read_file"}}},
	}
	for _, tt := range tests {
		t.Run(tt.choice, func(t *testing.T) {
			_, cfg, err := translate(t, `{"model":"x","messages":[{"role":"user","content":"hi"}],`+tools+`,"tool_choice":`+tt.choice+`}`, "gemini-2.0-flash")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, cfg.ToolConfig.FunctionCallingConfig); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			decls := cfg.Tools[0].FunctionDeclarations
			if len(decls) != 2 || decls[1].Parameters != nil {
				t.Errorf("a function with empty parameters must be declared without them: %+v", decls[1])
			}
		})
	}
}

func TestTranslateMessages(t *testing.T) {
	body := `{"model":"x","messages":[
		{"role":"system","content":"Be terse."},
		{"role":"developer","content":[{"type":"text","text":"Use Go."}]},
		{"role":"user","content":"first"},
		{"role":"user","content":[{"type":"text","text":"second"},{"type":"image_url","image_url":{"url":"https://example.com/a.png?x=1"}}]},
		{"role":"assistant","content":"ok","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},{"id":"call_2","type":"function","function":{"name":"g","arguments":"not json"}}]},
		{"role":"tool","tool_call_id":"call_2","content":"{\"ok\":true}"},
		{"role":"tool","tool_call_id":"call_1","content":[{"type":"text","text":"done"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}
	]}`
	contents, cfg, err := translate(t, body, "gemini-2.0-flash")
	if err != nil {
		t.Fatal(err)
	}
	want := []*genai.Content{
		{Role: "user", Parts: []*genai.Part{{Text: "first"}, {Text: "second"},
			{FileData: &genai.FileData{FileURI: "https://example.com/a.png?x=1", MIMEType: "image/png"}}}},
		{Role: "model", Parts: []*genai.Part{{Text: "ok"},
			{FunctionCall: &genai.FunctionCall{Name: "f", Args: map[string]any{"a": 1.0}}},
			{FunctionCall: &genai.FunctionCall{Name: "g", Args: map[string]any{"arguments": "not json"}}}}},
		{Role: "user", Parts: []*genai.Part{
			{FunctionResponse: &genai.FunctionResponse{Name: "g", Response: map[string]any{"ok": true}}},
			{FunctionResponse: &genai.FunctionResponse{Name: "f", Response: map[string]any{"output": "done"}}},
			{InlineData: &genai.Blob{MIMEType: "image/png", Data: []byte("\x89PNG\r\n\x1a\n")}}}},
	}
	if diff := cmp.Diff(want, contents); diff != "" {
		t.Errorf("contents (-want +got):\n%s", diff)
	}
	wantSys := &genai.Content{Role: "user", Parts: []*genai.Part{{Text: "Be terse."}, {Text: "Use Go."}}}
	if diff := cmp.Diff(wantSys, cfg.SystemInstruction); diff != "" {
		t.Errorf("systemInstruction (-want +got):\n%s", diff)
	}
}

// Bad input is a clear 400 naming the member, before anything is sent.
func TestTranslateBadInput(t *testing.T) {
	tests := []struct{ name, body, param string }{
		{"tool result without a call", `{"model":"x","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"call_9","content":"x"}]}`, "messages.[1].tool_call_id"},
		{"bad data URI", `{"model":"x","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,%%%"}}]}]}`, "messages.[0].content.[0].image_url.url"},
		{"bad tool_choice", `{"model":"x","messages":[{"role":"user","content":"hi"}],"tool_choice":"sometimes"}`, "tool_choice"},
		{"bad temperature", `{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}`, "temperature"},
		{"bad reasoning_effort", `{"model":"x","messages":[{"role":"user","content":"hi"}],"reasoning_effort":"extreme"}`, "reasoning_effort"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := translate(t, tt.body, "gemini-2.5-pro")
			checkAPIError(t, err, 400, "invalid_request_error", "")
			if ae, _ := err.(*APIError); ae != nil && ae.Param != tt.param {
				t.Errorf("param = %q, want %q", ae.Param, tt.param)
			}
		})
	}
}
