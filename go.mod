module github.com/nanogpt-proxy/nanogpt-proxy

go 1.26.8

require (
	github.com/PuerkitoBio/goquery v1.13.0
	github.com/go-chi/chi/v5 v5.5.0
	github.com/google/go-cmp v0.7.0
	github.com/mattn/go-sqlite3 v1.14.53
	github.com/robfig/cron/v3 v3.0.1
	go.yaml.in/yaml/v3 v3.0.6
)

require (
	github.com/andybalholm/cascadia v1.3.4 // indirect
	golang.org/x/net v0.58.0 // indirect
)
