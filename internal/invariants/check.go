package invariants

import "fmt"

// Check panics with the formatted message when cond is false and the build
// has the invariants tag. Callers guard expensive conditions with Enabled so
// the compiler drops them: if invariants.Enabled { invariants.Check(...) }.
func Check(cond bool, format string, args ...any) {
	if Enabled && !cond {
		panic(fmt.Sprintf("invariant violated: "+format, args...))
	}
}
