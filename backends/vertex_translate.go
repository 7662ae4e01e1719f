package backends

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"

	"google.golang.org/genai"
)

// This file translates OpenAI chat requests into Gemini GenerateContent requests. The
// response direction lives in vertex_stream.go.

// vertexModel maps the model ids clients use ("gemini-2.5-pro", "google/gemini-2.5-pro",
// "vertex/gemini-2.5-pro") to the id the SDK addresses as
// publishers/google/models/<id>.
func vertexModel(model string) string {
	model = strings.TrimPrefix(model, "vertex/")
	model = strings.TrimPrefix(model, "google/")
	return strings.TrimPrefix(model, "publishers/google/models/")
}

// thoughtSigMark separates a tool call id from the Gemini thoughtSignature it carries.
const thoughtSigMark = "_ts_"

// toolCallID makes the OpenAI id of the n-th function call of a response: unique within
// the response (key is random per response), with the call's thoughtSignature appended
// in base64url so that it comes back with the client's next turn.
func toolCallID(key string, n int, sig []byte) string {
	id := fmt.Sprintf("call_%s_%d", key, n)
	if len(sig) > 0 {
		id += thoughtSigMark + base64.RawURLEncoding.EncodeToString(sig)
	}
	return id
}

// signatureFromID returns the thoughtSignature a tool call id made by toolCallID
// carries, or nil.
func signatureFromID(id string) []byte {
	if !strings.HasPrefix(id, "call_") {
		return nil
	}
	i := strings.Index(id, thoughtSigMark)
	if i < 0 {
		return nil
	}
	sig, err := base64.RawURLEncoding.DecodeString(id[i+len(thoughtSigMark):])
	if err != nil {
		return nil
	}
	return sig
}

// oaToolCall is an assistant message's tool call.
type oaToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// oaPart is one element of an array content.
type oaPart struct {
	Type       string          `json:"type"`
	Text       string          `json:"text"`
	ImageURL   json.RawMessage `json:"image_url"`
	InputAudio *struct {
		Data   string `json:"data"`
		Format string `json:"format"`
	} `json:"input_audio"`
	File *struct {
		FileData string `json:"file_data"`
	} `json:"file"`
}

// vertexOwnedKeys are the request members translateRequest reads; any other member is
// dropped with a debug log.
var vertexOwnedKeys = []string{"model", "messages", "stream", "stream_options", "role", "conversation_id",
	"tools", "tool_choice", "temperature", "top_p", "top_k", "stop", "max_tokens", "max_completion_tokens",
	"seed", "presence_penalty", "frequency_penalty", "response_format", "reasoning_effort", "n"}

// translateRequest builds the Gemini contents and config for req sent to model (cache
// may be nil).
// Client errors come back as a 400 *APIError naming the offending member.
func translateRequest(ctx context.Context, log *slog.Logger, cache *declCache, req *ChatRequest, model string) ([]*genai.Content, *genai.GenerateContentConfig, error) {
	cfg := &genai.GenerateContentConfig{}
	contents, system, err := translateMessages(req.Messages)
	if err != nil {
		return nil, nil, err
	}
	if len(system) > 0 {
		cfg.SystemInstruction = &genai.Content{Role: "user", Parts: system}
	}
	if err := translateTools(ctx, log, cache, req, cfg); err != nil {
		return nil, nil, err
	}
	if err := translateGeneration(ctx, log, req, model, cfg); err != nil {
		return nil, nil, err
	}
	var dropped []string
	for _, f := range req.Fields() {
		if !slices.Contains(vertexOwnedKeys, f.Key) && !isNull(f.Value) {
			dropped = append(dropped, f.Key)
		}
	}
	if len(dropped) > 0 {
		log.DebugContext(ctx, "vertex: dropping request fields Gemini cannot honour", "backend", "vertex", "fields", dropped)
	}
	return contents, cfg, nil
}

// badRequest is a request the proxy cannot translate for Gemini. It is a 400 to the client
// when no other candidate takes it, but Untranslatable: NanoGPT takes the OpenAI format
// as it is, so the request falls over rather than failing here.
func badRequest(param, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: param,
		Message: fmt.Sprintf(format, args...), Backend: "vertex", Untranslatable: true}
}

// translateMessages turns the conversation into Gemini contents (consecutive turns of the
// same role merged, as Gemini requires) and system instruction parts.
func translateMessages(msgs []Message) ([]*genai.Content, []*genai.Part, error) {
	var contents []*genai.Content
	var system []*genai.Part
	names := map[string]string{} // tool_call_id → function name
	add := func(role string, parts []*genai.Part) {
		if len(parts) == 0 {
			return
		}
		if n := len(contents); n > 0 && contents[n-1].Role == role {
			contents[n-1].Parts = append(contents[n-1].Parts, parts...)
			return
		}
		contents = append(contents, &genai.Content{Role: role, Parts: parts})
	}
	for i := range msgs {
		m := &msgs[i]
		param := fmt.Sprintf("messages.[%d]", i)
		switch m.Role {
		case "system", "developer":
			if t := m.Text(0); t != "" {
				system = append(system, &genai.Part{Text: t})
			}
		case "user":
			parts, err := userParts(m.ContentJSON(), param+".content")
			if err != nil {
				return nil, nil, err
			}
			add(genai.RoleUser, parts)
		case "assistant":
			var parts []*genai.Part
			if t := m.Text(0); t != "" {
				parts = append(parts, &genai.Part{Text: t})
			}
			if raw := m.Get("tool_calls"); len(raw) > 0 && raw[0] == '[' {
				var calls []oaToolCall
				if err := json.Unmarshal(raw, &calls); err != nil {
					return nil, nil, badRequest(param+".tool_calls", "Invalid 'messages[%d].tool_calls': %v", i, err)
				}
				for _, c := range calls {
					names[c.ID] = c.Function.Name
					args := map[string]any{}
					if strings.TrimSpace(c.Function.Arguments) != "" {
						if err := json.Unmarshal([]byte(c.Function.Arguments), &args); err != nil {
							// A model once produced broken arguments; keep the text so the
							// conversation still goes through.
							args = map[string]any{"arguments": c.Function.Arguments}
						}
					}
					parts = append(parts, &genai.Part{
						FunctionCall:     &genai.FunctionCall{Name: c.Function.Name, Args: args},
						ThoughtSignature: signatureFromID(c.ID),
					})
				}
			}
			add(genai.RoleModel, parts)
		case "tool", "function":
			name := names[m.ToolCallID]
			if m.Role == "function" {
				_ = decodeString(m.Get("name"), &name)
			}
			if name == "" {
				return nil, nil, badRequest(param+".tool_call_id",
					"Invalid 'messages[%d]': a 'tool' message must answer a tool call of an earlier assistant message (tool_call_id %q not found).", i, m.ToolCallID)
			}
			content := m.ContentJSON()
			parts := []*genai.Part{{FunctionResponse: &genai.FunctionResponse{Name: name, Response: toolOutput(content)}}}
			if len(content) > 0 && content[0] == '[' {
				// Images in a tool result (browser screenshots) follow the response as parts.
				media, err := userParts(content, param+".content")
				if err != nil {
					return nil, nil, err
				}
				for _, p := range media {
					if p.Text == "" {
						parts = append(parts, p)
					}
				}
			}
			add(genai.RoleUser, parts)
		}
	}
	return contents, system, nil
}

// toolOutput is the functionResponse.response object for a tool message's content: a
// JSON object content is passed as it is, anything else as {"output": text}.
func toolOutput(content json.RawMessage) map[string]any {
	text := ContentText(content, 0)
	if t := strings.TrimSpace(text); strings.HasPrefix(t, "{") {
		var obj map[string]any
		if json.Unmarshal([]byte(t), &obj) == nil {
			return obj
		}
	}
	return map[string]any{"output": text}
}

// userParts translates user content: a string, or parts (text, image_url as data URI or
// http(s) URL, input_audio, file data).
func userParts(content json.RawMessage, param string) ([]*genai.Part, error) {
	if len(content) == 0 {
		return nil, nil
	}
	if content[0] == '"' {
		t := ContentText(content, 0)
		if t == "" {
			return nil, nil
		}
		return []*genai.Part{{Text: t}}, nil
	}
	var in []oaPart
	if err := json.Unmarshal(content, &in); err != nil {
		return nil, badRequest(param, "Invalid '%s': %v", param, err)
	}
	var out []*genai.Part
	for j, p := range in {
		pp := fmt.Sprintf("%s.[%d]", param, j)
		switch p.Type {
		case "text", "":
			if p.Text != "" {
				out = append(out, &genai.Part{Text: p.Text})
			}
		case "image_url":
			var url string
			if decodeString(p.ImageURL, &url) != nil {
				var obj struct {
					URL string `json:"url"`
				}
				_ = json.Unmarshal(p.ImageURL, &obj)
				url = obj.URL
			}
			part, err := mediaPart(url, pp+".image_url.url")
			if err != nil {
				return nil, err
			}
			out = append(out, part)
		case "input_audio":
			if p.InputAudio == nil {
				return nil, badRequest(pp, "Invalid '%s': missing input_audio", pp)
			}
			data, err := base64.StdEncoding.DecodeString(p.InputAudio.Data)
			if err != nil {
				return nil, badRequest(pp+".input_audio.data", "Invalid '%s.input_audio.data': not base64", pp)
			}
			out = append(out, &genai.Part{InlineData: &genai.Blob{MIMEType: "audio/" + p.InputAudio.Format, Data: data}})
		case "file":
			if p.File == nil || p.File.FileData == "" {
				return nil, badRequest(pp, "Invalid '%s': only file.file_data (a data URI) is supported by Vertex", pp)
			}
			part, err := mediaPart(p.File.FileData, pp+".file.file_data")
			if err != nil {
				return nil, err
			}
			out = append(out, part)
		default:
			return nil, badRequest(pp+".type", "Invalid '%s.type': content part type %q is not supported by Vertex", pp, p.Type)
		}
	}
	return out, nil
}

// mediaPart turns a data URI into inlineData and an http(s) URL (or gs:// URI) into
// fileData.
func mediaPart(url, param string) (*genai.Part, error) {
	if rest, ok := strings.CutPrefix(url, "data:"); ok {
		meta, data, ok := strings.Cut(rest, ",")
		mimeType, isB64 := strings.CutSuffix(meta, ";base64")
		if !ok || !isB64 || mimeType == "" {
			return nil, badRequest(param, "Invalid '%s': expected a base64 data URI (data:<mime>;base64,...)", param)
		}
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return nil, badRequest(param, "Invalid '%s': the data URI is not valid base64", param)
		}
		return &genai.Part{InlineData: &genai.Blob{MIMEType: mimeType, Data: b}}, nil
	}
	if strings.HasPrefix(url, "https://") || strings.HasPrefix(url, "http://") || strings.HasPrefix(url, "gs://") {
		mt := mime.TypeByExtension(path.Ext(strings.SplitN(url, "?", 2)[0]))
		if mt == "" {
			mt = "image/jpeg"
		}
		return &genai.Part{FileData: &genai.FileData{FileURI: url, MIMEType: mt}}, nil
	}
	return nil, badRequest(param, "Invalid '%s': expected a data URI or an http(s) URL", param)
}

// declCache remembers the function declarations made from a tools array: coding agents
// send the same tools on every turn, and cleaning their schemas is the costly part of a
// translation. Cached declarations are shared read-only between requests.
type declCache struct {
	mu sync.Mutex
	m  map[string][]*genai.FunctionDeclaration
}

// maxCachedToolSets bounds the cache; when full it starts over.
const maxCachedToolSets = 64

func (c *declCache) get(ctx context.Context, log *slog.Logger, raw json.RawMessage) ([]*genai.FunctionDeclaration, error) {
	if c == nil {
		return declarations(ctx, log, raw)
	}
	c.mu.Lock()
	d, ok := c.m[string(raw)]
	c.mu.Unlock()
	if ok {
		return d, nil
	}
	d, err := declarations(ctx, log, raw)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedToolSets {
		c.m = make(map[string][]*genai.FunctionDeclaration)
	}
	c.m[string(raw)] = d
	c.mu.Unlock()
	return d, nil
}

// declarations maps an OpenAI tools array to Gemini function declarations.
func declarations(ctx context.Context, log *slog.Logger, raw json.RawMessage) ([]*genai.FunctionDeclaration, error) {
	var tools []struct {
		Type     string `json:"type"`
		Function struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Parameters  json.RawMessage `json:"parameters"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &tools); err != nil {
		return nil, badRequest("tools", "Invalid 'tools': %v", err)
	}
	var decls []*genai.FunctionDeclaration
	for i, t := range tools {
		if t.Type != "function" {
			log.DebugContext(ctx, "vertex: dropping a tool that is not a function", "backend", "vertex", "type", t.Type)
			continue
		}
		if t.Function.Name == "" {
			return nil, badRequest(fmt.Sprintf("tools.[%d].function.name", i), "Missing required parameter: 'tools[%d].function.name'.", i)
		}
		d := &genai.FunctionDeclaration{Name: t.Function.Name, Description: t.Function.Description}
		if len(t.Function.Parameters) > 0 && !isNull(t.Function.Parameters) {
			s, err := CleanSchema(t.Function.Parameters)
			if err != nil {
				return nil, badRequest(fmt.Sprintf("tools.[%d].function.parameters", i), "Invalid 'tools[%d].function.parameters': %v", i, err)
			}
			switch {
			case s.Type != genai.TypeObject:
				log.DebugContext(ctx, "vertex: dropping non-object tool parameters", "backend", "vertex", "tool", d.Name)
			case len(s.Properties) == 0:
				// Vertex rejects an OBJECT without properties; a function without
				// parameters is declared without them.
			default:
				d.Parameters = s
			}
		}
		decls = append(decls, d)
	}
	return decls, nil
}

// translateTools maps tools to functionDeclarations and tool_choice to
// functionCallingConfig.
func translateTools(ctx context.Context, log *slog.Logger, cache *declCache, req *ChatRequest, cfg *genai.GenerateContentConfig) error {
	if raw := req.Get("tools"); len(raw) > 0 && !isNull(raw) {
		decls, err := cache.get(ctx, log, raw)
		if err != nil {
			return err
		}
		if len(decls) > 0 {
			cfg.Tools = []*genai.Tool{{FunctionDeclarations: decls}}
		}
	}
	raw := req.Get("tool_choice")
	if len(raw) == 0 || isNull(raw) {
		return nil
	}
	fc := &genai.FunctionCallingConfig{}
	var s string
	if decodeString(raw, &s) == nil {
		switch s {
		case "none":
			fc.Mode = genai.FunctionCallingConfigModeNone
		case "auto":
			fc.Mode = genai.FunctionCallingConfigModeAuto
		case "required":
			fc.Mode = genai.FunctionCallingConfigModeAny
		default:
			return badRequest("tool_choice", "Invalid value for 'tool_choice': %q; expected none, auto, required or a named function.", s)
		}
	} else {
		var named struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if json.Unmarshal(raw, &named) != nil || named.Function.Name == "" {
			return badRequest("tool_choice", "Invalid value for 'tool_choice': expected a string or {\"type\":\"function\",\"function\":{\"name\":...}}.")
		}
		fc.Mode = genai.FunctionCallingConfigModeAny
		fc.AllowedFunctionNames = []string{named.Function.Name}
	}
	if cfg.Tools == nil && fc.Mode != genai.FunctionCallingConfigModeNone {
		return nil // Gemini rejects a function calling config without functions
	}
	if cfg.Tools != nil {
		cfg.ToolConfig = &genai.ToolConfig{FunctionCallingConfig: fc}
	}
	return nil
}

// reasoningBudgets maps reasoning_effort to a Gemini thinking budget in tokens.
var reasoningBudgets = map[string]int32{"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}

// translateGeneration maps sampling, limits, response_format and reasoning_effort to the
// generation config.
func translateGeneration(ctx context.Context, log *slog.Logger, req *ChatRequest, model string, cfg *genai.GenerateContentConfig) error {
	num := func(key string) (*float64, error) {
		raw := req.Get(key)
		if len(raw) == 0 || isNull(raw) {
			return nil, nil
		}
		var f float64
		if err := json.Unmarshal(raw, &f); err != nil {
			return nil, badRequest(key, "Invalid type for '%s': expected a number, but got %s instead.", key, jsonKind(raw))
		}
		return &f, nil
	}
	f32 := func(key string, dst **float32) error {
		f, err := num(key)
		if f != nil {
			v := float32(*f)
			*dst = &v
		}
		return err
	}
	for key, dst := range map[string]**float32{"temperature": &cfg.Temperature, "top_p": &cfg.TopP,
		"top_k": &cfg.TopK, "presence_penalty": &cfg.PresencePenalty, "frequency_penalty": &cfg.FrequencyPenalty} {
		if err := f32(key, dst); err != nil {
			return err
		}
	}
	for _, key := range []string{"max_tokens", "max_completion_tokens"} { // the newer name wins
		f, err := num(key)
		if err != nil {
			return err
		}
		if f != nil {
			cfg.MaxOutputTokens = int32(*f)
		}
	}
	if f, err := num("seed"); err != nil {
		return err
	} else if f != nil {
		v := int32(int64(*f))
		cfg.Seed = &v
	}
	if f, err := num("n"); err != nil {
		return err
	} else if f != nil && *f > 1 {
		log.DebugContext(ctx, "vertex: n > 1 is not supported; answering with one choice", "backend", "vertex")
	}
	if raw := req.Get("stop"); len(raw) > 0 && !isNull(raw) {
		var one string
		if decodeString(raw, &one) == nil {
			cfg.StopSequences = []string{one}
		} else if err := json.Unmarshal(raw, &cfg.StopSequences); err != nil {
			return badRequest("stop", "Invalid type for 'stop': expected a string or an array of strings.")
		}
	}
	if raw := req.Get("response_format"); len(raw) > 0 && !isNull(raw) {
		var rf struct {
			Type       string `json:"type"`
			JSONSchema struct {
				Schema json.RawMessage `json:"schema"`
			} `json:"json_schema"`
		}
		if err := json.Unmarshal(raw, &rf); err != nil {
			return badRequest("response_format", "Invalid 'response_format': %v", err)
		}
		switch rf.Type {
		case "json_object":
			cfg.ResponseMIMEType = "application/json"
		case "json_schema":
			cfg.ResponseMIMEType = "application/json"
			if len(rf.JSONSchema.Schema) > 0 {
				s, err := CleanSchema(rf.JSONSchema.Schema)
				if err != nil {
					return badRequest("response_format.json_schema.schema", "Invalid 'response_format.json_schema.schema': %v", err)
				}
				cfg.ResponseSchema = s
			}
		case "text", "":
		default:
			return badRequest("response_format.type", "Invalid value for 'response_format.type': %q.", rf.Type)
		}
	}
	var effort string
	if raw := req.Get("reasoning_effort"); len(raw) > 0 && !isNull(raw) {
		if decodeString(raw, &effort) != nil {
			return badRequest("reasoning_effort", "Invalid type for 'reasoning_effort': expected a string.")
		}
	}
	if _, known := reasoningBudgets[effort]; !known && effort != "" && effort != "none" {
		return badRequest("reasoning_effort", "Invalid value for 'reasoning_effort': %q; expected none, minimal, low, medium or high.", effort)
	}
	// Gemini 1.x and 2.0 (and non-Gemini models) have no thinking config: sending one is a 400.
	thinking := strings.HasPrefix(model, "gemini-") && !strings.HasPrefix(model, "gemini-1") &&
		!strings.HasPrefix(model, "gemini-2.0")
	if !thinking && effort != "" {
		log.DebugContext(ctx, "vertex: dropping reasoning_effort for a model without thinking", "backend", "vertex", "model", model)
		effort = ""
	}
	switch b, ok := reasoningBudgets[effort]; {
	case ok:
		cfg.ThinkingConfig = &genai.ThinkingConfig{IncludeThoughts: true, ThinkingBudget: &b}
	case effort == "none":
		var b int32
		if strings.Contains(model, "pro") { // Pro models cannot turn thinking off
			b = 128
		}
		cfg.ThinkingConfig = &genai.ThinkingConfig{ThinkingBudget: &b}
	case thinking:
		// Ask for thought summaries so that reasoning streams to the client.
		cfg.ThinkingConfig = &genai.ThinkingConfig{IncludeThoughts: true}
	}
	return nil
}

// CleanSchema turns an OpenAI tool's JSON schema into the OpenAPI subset Vertex accepts:
// $schema, strict, additionalProperties and other unsupported keywords are removed, type
// arrays such as ["string","null"] become a type plus nullable, local $refs are inlined,
// oneOf becomes anyOf, enums keep only strings, required lists only declared properties,
// and a schema without a type gets one (OBJECT with properties, ARRAY with items,
// otherwise STRING).
func CleanSchema(raw json.RawMessage) (*genai.Schema, error) {
	var root any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&root); err != nil {
		return nil, err
	}
	rm, ok := root.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("a schema must be an object")
	}
	cleaned := cleanNode(rm, rm, 0)
	b, err := json.Marshal(cleaned)
	if err != nil {
		return nil, err
	}
	var s genai.Schema
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// maxSchemaDepth bounds nesting and $ref expansion (a recursive $ref stops there).
const maxSchemaDepth = 24

var geminiTypes = map[string]string{"string": "STRING", "number": "NUMBER", "integer": "INTEGER",
	"boolean": "BOOLEAN", "array": "ARRAY", "object": "OBJECT"}

// allowedFormats are the formats Vertex accepts per type.
var allowedFormats = map[string][]string{"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"},
	"INTEGER": {"int32", "int64"}}

func cleanNode(n, root map[string]any, depth int) map[string]any {
	out := map[string]any{}
	if depth > maxSchemaDepth {
		out["type"] = "STRING"
		return out
	}
	if ref, ok := n["$ref"].(string); ok {
		if target := resolveRef(root, ref); target != nil {
			return cleanNode(overlay(target, n, "$ref"), root, depth+1)
		}
	}
	if all, ok := n["allOf"].([]any); ok && len(all) == 1 {
		if m, ok := all[0].(map[string]any); ok {
			return cleanNode(overlay(m, n, "allOf"), root, depth+1)
		}
	}
	nullable := false
	var typ string
	switch t := n["type"].(type) {
	case string:
		if t == "null" {
			nullable = true
		} else {
			typ = geminiTypes[t]
		}
	case []any:
		var kinds []string
		for _, e := range t {
			if s, _ := e.(string); s == "null" {
				nullable = true
			} else if g := geminiTypes[s]; g != "" {
				kinds = append(kinds, g)
			}
		}
		switch len(kinds) {
		case 0:
		case 1:
			typ = kinds[0]
		default:
			alts := make([]any, 0, len(kinds))
			for _, k := range kinds {
				alts = append(alts, map[string]any{"type": k})
			}
			out["anyOf"] = alts
		}
	}
	for _, key := range []string{"anyOf", "oneOf"} {
		alts, ok := n[key].([]any)
		if !ok {
			continue
		}
		var kept []any
		for _, a := range alts {
			m, ok := a.(map[string]any)
			if !ok {
				continue
			}
			if t, _ := m["type"].(string); t == "null" && len(m) == 1 {
				nullable = true
				continue
			}
			kept = append(kept, cleanNode(m, root, depth+1))
		}
		switch len(kept) {
		case 0:
		case 1: // a plain nullable union: no anyOf needed
			for k, v := range kept[0].(map[string]any) {
				out[k] = v
			}
			if t, _ := out["type"].(string); t != "" {
				typ = t
			}
		default:
			out["anyOf"] = kept
		}
	}
	if d, ok := n["description"].(string); ok && d != "" {
		out["description"] = d
	}
	if t, ok := n["title"].(string); ok && t != "" {
		out["title"] = t
	}
	if props, ok := n["properties"].(map[string]any); ok {
		cp := map[string]any{}
		for k, v := range props {
			if m, ok := v.(map[string]any); ok {
				cp[k] = cleanNode(m, root, depth+1)
			}
		}
		out["properties"] = cp
		if typ == "" {
			typ = "OBJECT"
		}
		if req, ok := n["required"].([]any); ok {
			var keep []any
			for _, r := range req {
				if s, ok := r.(string); ok && cp[s] != nil {
					keep = append(keep, s)
				}
			}
			if len(keep) > 0 {
				out["required"] = keep
			}
		}
	}
	switch items := n["items"].(type) {
	case map[string]any:
		out["items"] = cleanNode(items, root, depth+1)
		if typ == "" {
			typ = "ARRAY"
		}
	case []any: // tuple form: Gemini knows one item schema
		if len(items) > 0 {
			if m, ok := items[0].(map[string]any); ok {
				out["items"] = cleanNode(m, root, depth+1)
			}
		}
		if typ == "" {
			typ = "ARRAY"
		}
	}
	if typ == "ARRAY" && out["items"] == nil {
		out["items"] = map[string]any{"type": "STRING"}
	}
	var enum []any
	if e, ok := n["enum"].([]any); ok {
		enum = e
	} else if c, ok := n["const"]; ok {
		enum = []any{c}
	}
	if enum != nil {
		var strs []any
		allStrings := true
		for _, e := range enum {
			switch v := e.(type) {
			case string:
				strs = append(strs, v)
			case nil:
				nullable = true
			default:
				allStrings = false
			}
		}
		if allStrings && len(strs) > 0 && (typ == "" || typ == "STRING") {
			out["enum"] = strs
			typ = "STRING"
		}
	}
	if typ == "" && out["anyOf"] == nil {
		typ = "STRING" // "any value": Vertex requires a type
	}
	if typ != "" {
		out["type"] = typ
	}
	if f, ok := n["format"].(string); ok && slices.Contains(allowedFormats[typ], f) {
		out["format"] = f
	}
	for _, k := range []string{"minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength", "pattern", "default"} {
		if v, ok := n[k]; ok && v != nil {
			out[k] = v
		}
	}
	if nullable {
		out["nullable"] = true
	}
	return out
}

// overlay returns base with the members of n (except skip) laid over it.
func overlay(base, n map[string]any, skip string) map[string]any {
	merged := make(map[string]any, len(base)+len(n))
	for k, v := range base {
		merged[k] = v
	}
	for k, v := range n {
		if k != skip {
			merged[k] = v
		}
	}
	return merged
}

// resolveRef finds a local reference such as #/$defs/Name or #/definitions/Name.
func resolveRef(root map[string]any, ref string) map[string]any {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil
	}
	var cur any = root
	for _, seg := range strings.Split(p, "/") {
		seg = strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[seg]
	}
	m, _ := cur.(map[string]any)
	return m
}
