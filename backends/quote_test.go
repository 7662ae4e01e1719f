package backends

import (
	"bytes"
	"encoding/json"
	"testing"
)

// quote writes what encoding/json writes without HTML escaping, on its fast path for plain
// ASCII and on the encoder path for everything else.
func TestQuoteMatchesEncoder(t *testing.T) {
	for _, s := range []string{"", "auto", "qwen/qwen3-coder", "<b>&</b>", "say \"hi\"", `back\slash`, "tab\tnew\nline",
		"\x00\x1f\x7f", "é ✓ 😀", "line\u2028sep\u2029", "bad \xff utf8", "~!@#$%^*()_+{}|:?`-=[];',./"} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		want := bytes.TrimRight(buf.Bytes(), "\n")
		if got := quote(s); !bytes.Equal(got, want) {
			t.Errorf("quote(%q) = %s, want %s", s, got, want)
		}
	}
}
