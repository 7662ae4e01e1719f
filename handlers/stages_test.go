package handlers

import (
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/promptengineer"
)

// defaultPrompt is the prompt engineer as the binary builds it with no configuration.
func defaultPrompt(t testing.TB) *promptengineer.Engineer {
	t.Helper()
	eng, err := promptengineer.New(promptengineer.Config{Default: config.DefaultStrategies}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return eng
}
