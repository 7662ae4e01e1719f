package config

import _ "embed"

// DefaultStrategies is config/prompt_strategies.yaml as shipped: the prompt engineer's
// strategies when no file exists at PROMPT_STRATEGIES_PATH.
//
//go:embed prompt_strategies.yaml
var DefaultStrategies []byte
