package alloc_test

import (
	"fmt"

	"github.com/mpaged/mpaged/alloc"
)

type exampleBio struct{ vecs [][]byte }

func ExampleBioSet() {
	// A budget that holds one 16-vec bio: a request for 100 vecs halves
	// 100 -> 50 -> 25 -> 12, and 12 (class 16) fits.
	set := alloc.NewBioSet(alloc.BioSetConfig{BudgetBytes: 256 + 16*32},
		func(n int) *exampleBio { return &exampleBio{vecs: make([][]byte, 0, n)} })
	b, got := set.Alloc(100, alloc.MemAlloc)
	fmt.Println(got, cap(b.vecs))

	// Nothing fits now, but the reserve keeps writeback moving.
	r, rgot := set.Alloc(16, alloc.MemAlloc|alloc.UseReserve)
	fmt.Println(rgot, cap(r.vecs))

	set.Free(r, rgot)
	set.Free(b, got)
	st := set.Stats()
	fmt.Println(st.InUse, st.Degraded, st.ReserveUsed)
	// Output:
	// 12 16
	// 1 1
	// 0 2 1
}

func ExampleFramePool() {
	pool, err := alloc.NewFramePool(alloc.PoolConfig{ArenaBytes: 1 << 20, MaxBytes: 4 << 20})
	if err != nil {
		panic(err)
	}
	f, err := pool.Get()
	if err != nil {
		panic(err)
	}
	copy(f, "hello")
	fmt.Println(len(f), pool.BufIndex(f), pool.Stats().InUse)
	pool.Put(f)
	fmt.Println(pool.Close())
	// Output:
	// 4096 0 1
	// <nil>
}
