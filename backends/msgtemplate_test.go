package backends

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// legacyParseMessage is parseMessage as it was before message templates: the members
// split with splitObjectTrusted and read in order. Templates must give the same messages.
func legacyParseMessage(raw json.RawMessage) (Message, *RequestError) {
	if raw[0] != '{' {
		return Message{}, &RequestError{Message: "expected an object"}
	}
	fields := splitObjectTrusted(raw)
	m := Message{Raw: raw, fields: fields}
	for _, f := range fields {
		switch f.Key {
		case "role":
			if decodeString(f.Value, &m.Role) != nil {
				return Message{}, &RequestError{Param: "role", Message: "'role' must be a string"}
			}
		case "content":
			switch f.Value[0] {
			case '"', '[':
				m.Content = f.Value
			case 'n':
			default:
				return Message{}, &RequestError{Param: "content", Message: "'content' must be a string or an array of content parts"}
			}
		case "tool_call_id":
			_ = decodeString(f.Value, &m.ToolCallID)
		}
	}
	switch m.Role {
	case "system", "developer", "user", "assistant", "tool", "function":
	case "":
		return Message{}, &RequestError{Param: "role", Message: "missing required member 'role'"}
	default:
		return Message{}, &RequestError{Param: "role", Message: fmt.Sprintf("unknown role %q; expected one of system, developer, user, assistant, tool", m.Role)}
	}
	return m, nil
}

// renderMessages shows everything a stage can read of the messages.
func renderMessages(msgs []Message) string {
	var sb strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&sb, "role=%q tool_call_id=%q content=%s raw=%s\n", m.Role, m.ToolCallID, m.Content, m.Raw)
		for _, f := range m.fields {
			fmt.Fprintf(&sb, "  %q=%s cap=%d\\n", f.Key, f.Value, cap(f.Value))
		}
	}
	return sb.String()
}

// legacyMessages parses a request's last "messages" member the old way.
func legacyMessages(t *testing.T, body []byte) (string, string) {
	t.Helper()
	fields, err := SplitObject(body)
	if err != nil {
		return "", "error: " + err.Error()
	}
	var msgs []Message
	for _, f := range fields {
		if f.Key != "messages" || f.Value[0] != '[' {
			continue
		}
		msgs = msgs[:0]
		for _, e := range splitArrayTrusted(f.Value) {
			m, rerr := legacyParseMessage(e)
			if rerr != nil {
				return "", "error: " + rerr.Message
			}
			msgs = append(msgs, m)
		}
	}
	return renderMessages(msgs), ""
}

// TestMessagesFromTemplatesMatchParsing: a request's messages are the same whether they
// are parsed, or built from the template a request with the same message bytes left in
// the validation cache: every recorded request, parsed three times (scanned, kept, built
// from templates), and requests with a repeated "messages" member, null and repeated
// content, escaped member names, a tool message and an unknown role.
func TestMessagesFromTemplatesMatchParsing(t *testing.T) {
	long := strings.Repeat("lorem ipsum ", 40)
	bodies := map[string][]byte{}
	for name, b := range requestBodies(t) {
		bodies[name] = b
	}
	for name, msgs := range map[string]string{
		"repeated messages member":  `"messages":[{"role":"user","content":"` + long + `"}],"messages":[{"role":"assistant","content":"` + long + `"}]`,
		"null and repeated content": `"messages":[{"role":"user","content":"` + long + `","content":null},{"content":"` + long + `","role":"user","content":"second"}]`,
		"escaped names":             `"messages":[{"\u0072ole":"user","c\u006fntent":"` + long + `"}]`,
		"tool message":              `"messages":[{"role":"tool","tool_call_id":"call_1","content":[{"type":"text","text":"` + long + `"}],"x":{"y":[1,2]}}]`,
		"unknown role":              `"messages":[{"role":"robot","content":"` + long + `"}]`,
	} {
		bodies[name] = []byte(`{"model":"auto",` + msgs + `}`)
	}
	templated := 0
	for name, body := range bodies {
		want, wantErr := legacyMessages(t, body)
		for round := range 3 {
			r, err := ParseChatRequest(bytes.Clone(body))
			if wantErr != "" || err != nil {
				if (wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), strings.TrimPrefix(wantErr, "error: "))) {
					t.Errorf("%s, round %d: error %v, want %q", name, round, err, wantErr)
				}
				continue
			}
			if got := renderMessages(r.Messages); got != want {
				t.Errorf("%s, round %d: messages differ from parsing them:\n got %.600s\nwant %.600s", name, round, got, want)
			}
			detached := make([]Message, len(r.Messages))
			for i := range r.Messages {
				detached[i] = r.Messages[i].Detach()
			}
			if got := renderMessages(detached); got != want {
				t.Errorf("%s, round %d: detached messages differ from parsing them:\n got %.600s\nwant %.600s", name, round, got, want)
			}
		}
		fields, _ := SplitObject(body)
		for _, f := range fields {
			if f.Key == "messages" && f.Value[0] == '[' {
				eachElement(f.Value, func(e json.RawMessage) bool {
					if _, _, kept := requestValues.lookupEntry(e, 0); kept != nil && kept.msg.Load() != nil {
						templated++
					}
					return false
				})
			}
		}
	}
	if templated == 0 {
		t.Error("no message was built from a template: the test does not test them")
	}
}
