package invariants

import "testing"

func TestCheck(t *testing.T) {
	Check(true, "never")
	defer func() {
		r := recover()
		if Enabled && r == nil {
			t.Fatal("a failed check did not panic with the invariants tag")
		}
		if !Enabled && r != nil {
			t.Fatalf("a failed check panicked without the tag: %v", r)
		}
	}()
	Check(false, "page %d", 7)
}
