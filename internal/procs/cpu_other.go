//go:build !unix

package procs

import "time"

// processCPU cannot be read here: the Controller leaves GOMAXPROCS at the runtime's
// default.
func processCPU() (time.Duration, bool) { return 0, false }
