//go:build !unix

package bench

import "time"

// processCPU is not available here; the single-core rate stands in.
func processCPU() (time.Duration, bool) { return 0, false }
