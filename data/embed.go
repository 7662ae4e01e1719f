// Package data holds the default model rankings, embedded in the binary so the proxy
// works from any directory. A file at MODEL_ROUTING_PATH overrides it.
package data

import _ "embed"

// DefaultRouting is data/model_routing.json as shipped.
//
//go:embed model_routing.json
var DefaultRouting []byte
