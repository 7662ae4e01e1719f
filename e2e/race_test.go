//go:build race

package e2e

// raceEnabled: the tests run with -race, so the proxy binary is built with it as well.
const raceEnabled = true
