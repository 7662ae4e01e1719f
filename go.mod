module github.com/nanogpt-proxy/nanogpt-proxy

go 1.26.8

require (
	github.com/go-chi/chi/v5 v5.5.0
	github.com/mattn/go-sqlite3 v1.14.53
	go.yaml.in/yaml/v3 v3.0.6
)

require github.com/google/go-cmp v0.7.0
