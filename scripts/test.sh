#!/usr/bin/env bash
# The one test command (README quick start, `make test`, .ci/run): installs what the tests
# need that Go does not fetch itself, then gofmt, go vet and go test -race.
set -euo pipefail
cd "$(dirname "$0")/.."

# npm packages for the end-to-end client tests (the official openai SDK, MCP servers).
if [ -f e2e/package.json ] && command -v npm >/dev/null 2>&1; then
  if [ ! -d e2e/node_modules ] || [ e2e/package-lock.json -nt e2e/node_modules ]; then
    npm ci --prefix e2e --no-audit --no-fund --loglevel=error
  fi
fi

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './e2e/node_modules/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
go test -race -count=1 "$@" ./...
