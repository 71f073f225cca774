//go:build !unix

package bench

import "time"

// ProcessCPU is not available here; the single-core rate stands in.
func ProcessCPU() (time.Duration, bool) { return 0, false }
