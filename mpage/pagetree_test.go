package mpage

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// checkTree walks t and fails on any broken invariant (see pageTree): the
// present bitmap matches the slots, a parent's mark bit is set exactly when
// the child has that mark, no node is empty, parent links and offsets are
// right, every page sits at its index. It returns the pages found.
func checkTree(t *testing.T, tr *pageTree) []*Page {
	t.Helper()
	var pages []*Page
	var walk func(n *radixNode, base uint64)
	walk = func(n *radixNode, base uint64) {
		if n.marks[markPresent] == 0 {
			t.Fatalf("empty node at shift %d base %d", n.shift, base)
		}
		for i := range radixSize {
			present := n.slots[i] != nil
			if present != (n.marks[markPresent]&(1<<i) != 0) {
				t.Fatalf("node shift %d base %d slot %d: present %v, bit %v", n.shift, base, i, present, !present)
			}
			if !present {
				for m := markDirty; m < numMarks; m++ {
					if n.marks[m]&(1<<i) != 0 {
						t.Fatalf("node shift %d slot %d: mark %d on an empty slot", n.shift, i, m)
					}
				}
				continue
			}
			idx := base + uint64(i)<<n.shift
			if n.shift == 0 {
				if p := n.page(i); p.Index != idx {
					t.Fatalf("page %d in the slot of index %d", p.Index, idx)
				} else {
					pages = append(pages, p)
				}
				continue
			}
			c := n.child(i)
			if c.parent != n || int(c.offset) != i || c.shift != n.shift-radixBits {
				t.Fatalf("child at shift %d slot %d: parent %p offset %d shift %d", n.shift, i, c.parent, c.offset, c.shift)
			}
			for m := markDirty; m < numMarks; m++ {
				if (c.marks[m] != 0) != (n.marks[m]&(1<<i) != 0) {
					t.Fatalf("node shift %d slot %d: mark %d bit %v, child has %#x", n.shift, i, m, n.marks[m]&(1<<i) != 0, c.marks[m])
				}
			}
			walk(c, idx)
		}
	}
	if tr.root != nil {
		if tr.root.parent != nil {
			t.Fatal("root has a parent")
		}
		walk(tr.root, 0)
	}
	return pages
}

// TestPageTreeModel runs random inserts, deletes and mark changes against
// a map and checks lookups, ordered mark walks and the tree's invariants,
// over dense, sparse and huge indices.
func TestPageTreeModel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		index func(r *rand.Rand) uint64
	}{
		{"dense", func(r *rand.Rand) uint64 { return r.Uint64N(300) }},
		{"sparse", func(r *rand.Rand) uint64 { return r.Uint64N(1 << 30) }},
		{"huge", func(r *rand.Rand) uint64 { return ^uint64(0) - r.Uint64N(100) }},
		{"mixed", func(r *rand.Rand) uint64 {
			if r.IntN(2) == 0 {
				return r.Uint64N(1000)
			}
			return r.Uint64()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(len(tc.name))))
			tr := pageTree{nodes: new(radixPool)}
			model := map[uint64]*Page{}
			marks := [numMarks]map[uint64]bool{nil, {}, {}}
			for step := range 20000 {
				idx := tc.index(r)
				switch op := r.IntN(10); {
				case op < 4:
					p := &Page{Index: idx}
					_, had := model[idx]
					if got := tr.insert(p); got == had {
						t.Fatalf("step %d: insert %d = %v with the index taken %v", step, idx, got, had)
					}
					if !had {
						model[idx] = p
					}
				case op < 7:
					p := model[idx]
					if p == nil {
						if tr.delete(&Page{Index: idx}) {
							t.Fatalf("step %d: deleted %d, not in the tree", step, idx)
						}
						continue
					}
					if tr.delete(&Page{Index: idx}) {
						t.Fatalf("step %d: deleted a page that is not the one at %d", step, idx)
					}
					if !tr.delete(p) {
						t.Fatalf("step %d: delete %d failed", step, idx)
					}
					delete(model, idx)
					delete(marks[markDirty], idx)
					delete(marks[markWriteback], idx)
				default:
					if model[idx] == nil {
						continue
					}
					m := markDirty + r.IntN(2)
					p := model[idx]
					if r.IntN(2) == 0 {
						if tr.setMark(p, m) == marks[m][idx] {
							t.Fatalf("step %d: setMark(%d, %d) with the mark %v", step, idx, m, marks[m][idx])
						}
						marks[m][idx] = true
					} else {
						if tr.clearMark(p, m) != marks[m][idx] {
							t.Fatalf("step %d: clearMark(%d, %d) with the mark %v", step, idx, m, marks[m][idx])
						}
						delete(marks[m], idx)
					}
					if tr.setMark(&Page{Index: idx}, m) || tr.clearMark(&Page{Index: idx}, m) {
						t.Fatalf("step %d: a page not in the tree took a mark change at %d", step, idx)
					}
				}
				if step%500 == 0 {
					checkAgainst(t, &tr, model, marks)
				}
			}
			checkAgainst(t, &tr, model, marks)
			for _, p := range model {
				tr.delete(p)
			}
			if tr.root != nil {
				t.Fatal("tree not empty after deleting every page")
			}
		})
	}
}

func checkAgainst(t *testing.T, tr *pageTree, model map[uint64]*Page, marks [numMarks]map[uint64]bool) {
	t.Helper()
	if got := checkTree(t, tr); len(got) != len(model) {
		t.Fatalf("tree holds %d pages, model %d", len(got), len(model))
	}
	for idx, p := range model {
		if tr.get(idx) != p {
			t.Fatalf("get(%d) = %v, want the page", idx, tr.get(idx))
		}
		for m := markDirty; m < numMarks; m++ {
			if tr.marked(p, m) != marks[m][idx] {
				t.Fatalf("page %d mark %d = %v", idx, m, tr.marked(p, m))
			}
		}
	}
	for m := markPresent; m < numMarks; m++ {
		var want []uint64
		for idx := range model {
			if m == markPresent || marks[m][idx] {
				want = append(want, idx)
			}
		}
		slices.Sort(want)
		// The whole walk in batches of 7, and a window in the middle.
		var got []uint64
		out := make([]*Page, 7)
		for from := uint64(0); ; {
			n := tr.gang(from, ^uint64(0), m, out)
			for _, p := range out[:n] {
				got = append(got, p.Index)
			}
			if n < len(out) || out[n-1].Index == ^uint64(0) {
				break
			}
			from = out[n-1].Index + 1
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("mark %d walk: %d pages, want %d", m, len(got), len(want))
		}
		if len(want) > 2 {
			lo, hi := want[len(want)/3], want[2*len(want)/3]
			big := make([]*Page, len(want))
			n := tr.gang(lo, hi, m, big)
			if n != len(want)/3*2-len(want)/3+1 && n != 2*len(want)/3-len(want)/3+1 {
				t.Fatalf("mark %d window [%d, %d]: %d pages", m, lo, hi, n)
			}
			if big[0].Index != lo || big[n-1].Index != hi {
				t.Fatalf("mark %d window [%d, %d]: from %d to %d", m, lo, hi, big[0].Index, big[n-1].Index)
			}
		}
	}
}

// TestPageTreeReusesNodes: a tree that empties and fills again takes its
// nodes from the pool, allocating nothing.
func TestPageTreeReusesNodes(t *testing.T) {
	tr := pageTree{nodes: new(radixPool)}
	pages := make([]Page, 5000)
	fill := func() {
		for i := range pages {
			pages[i].Index = uint64(i*37) % 200000
			tr.insert(&pages[i])
			tr.setMark(&pages[i], markDirty)
		}
		for i := range pages {
			tr.delete(&pages[i])
		}
	}
	fill()
	if n := testing.AllocsPerRun(10, fill); n != 0 {
		t.Fatalf("%v allocations per fill", n)
	}
}
