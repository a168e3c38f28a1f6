package mpage

import (
	"math/bits"
	"sync"
	"unsafe"
)

// pageTree is a mapping's page index: a radix tree keyed by page index,
// 64 slots a node, with a bitmap per mark in every node, as the kernel's
// page cache tree keeps its dirty and writeback tags. A lookup is a walk of
// a few array slots (no comparisons); a dense run of pages shares its
// nodes; finding the next dirty or writeback page skips whole subtrees
// whose bitmap is empty.
//
// Invariants (the caller serialises every method; Mapping holds its mu):
//   - a leaf (shift 0) holds *Page in its slots, an inner node *radixNode;
//   - marks[markPresent] has bit i set exactly when slot i is non-nil;
//   - for the other marks, a leaf's bit i is the mark of the page in slot
//     i, an inner node's bit i is set exactly when the child in slot i has
//     any bit of that mark set;
//   - no node is empty: a node whose last slot is cleared is freed and
//     cleared from its parent (the root: the tree becomes empty);
//   - the root spans indices below 1<<(root.shift+radixBits).
type pageTree struct {
	root  *radixNode
	nodes *radixPool
}

const (
	radixBits = 6
	radixSize = 1 << radixBits
	radixMask = radixSize - 1
)

// Marks a page in the tree may carry; markPresent is kept by the tree.
const (
	markPresent = iota
	markDirty
	markWriteback
	numMarks
)

type radixNode struct {
	shift  uint8 // index bits below this node's slots: 0 for a leaf
	offset uint8 // slot in the parent
	parent *radixNode
	marks  [numMarks]uint64
	slots  [radixSize]unsafe.Pointer // *Page in a leaf, *radixNode above
}

func (n *radixNode) child(i int) *radixNode { return (*radixNode)(n.slots[i]) }
func (n *radixNode) page(i int) *Page       { return (*Page)(n.slots[i]) }

// covers reports whether index lies in the span of n as a root: indices
// below 1<<(shift+radixBits), every index once that reaches 64 bits.
func (n *radixNode) covers(index uint64) bool {
	s := uint(n.shift) + radixBits
	return s >= 64 || index>>s == 0
}

// radixPool keeps freed nodes for reuse, so a steady cache allocates none.
// One pool serves every mapping of a cache.
type radixPool struct {
	mu   sync.Mutex
	free []*radixNode
}

// maxFreeNodes bounds the pool: about 2 MiB of nodes.
const maxFreeNodes = 4096

func (p *radixPool) get(shift uint8) *radixNode {
	p.mu.Lock()
	var n *radixNode
	if k := len(p.free); k > 0 {
		n = p.free[k-1]
		p.free[k-1] = nil
		p.free = p.free[:k-1]
	}
	p.mu.Unlock()
	if n == nil {
		n = new(radixNode)
	}
	n.shift = shift
	return n
}

func (p *radixPool) put(n *radixNode) {
	*n = radixNode{}
	p.mu.Lock()
	if len(p.free) < maxFreeNodes {
		p.free = append(p.free, n)
	}
	p.mu.Unlock()
}

// get returns the page at index, or nil.
func (t *pageTree) get(index uint64) *Page {
	n := t.root
	if n == nil || !n.covers(index) {
		return nil
	}
	for n.shift > 0 {
		n = n.child(int(index>>n.shift) & radixMask)
		if n == nil {
			return nil
		}
	}
	return n.page(int(index) & radixMask)
}

// insert puts p at p.Index; false (and no change) if the slot is taken.
func (t *pageTree) insert(p *Page) bool {
	index := p.Index
	t.grow(index)
	n := t.root
	for n.shift > 0 {
		i := int(index>>n.shift) & radixMask
		c := n.child(i)
		if c == nil {
			c = t.nodes.get(n.shift - radixBits)
			c.parent, c.offset = n, uint8(i)
			n.slots[i] = unsafe.Pointer(c)
			n.marks[markPresent] |= 1 << i
		}
		n = c
	}
	i := int(index) & radixMask
	if n.slots[i] != nil {
		return false // the leaf was there already: nothing was added
	}
	n.slots[i] = unsafe.Pointer(p)
	n.marks[markPresent] |= 1 << i
	return true
}

// grow adds levels above the root until it spans index.
func (t *pageTree) grow(index uint64) {
	if t.root == nil {
		shift := uint8(0)
		for index>>(uint(shift)+radixBits) != 0 {
			shift += radixBits
		}
		t.root = t.nodes.get(shift)
		return
	}
	for !t.root.covers(index) {
		old := t.root
		r := t.nodes.get(old.shift + radixBits)
		r.slots[0] = unsafe.Pointer(old)
		for m := range numMarks {
			if old.marks[m] != 0 {
				r.marks[m] |= 1
			}
		}
		old.parent, old.offset = r, 0
		t.root = r
	}
}

// leaf returns the leaf holding index and the slot, or nil.
func (t *pageTree) leaf(index uint64) (*radixNode, int) {
	n := t.root
	if n == nil || !n.covers(index) {
		return nil, 0
	}
	for n.shift > 0 {
		n = n.child(int(index>>n.shift) & radixMask)
		if n == nil {
			return nil, 0
		}
	}
	return n, int(index) & radixMask
}

// delete removes p from its index; false if p is not there.
func (t *pageTree) delete(p *Page) bool {
	n, i := t.leaf(p.Index)
	if n == nil || n.page(i) != p {
		return false
	}
	for m := markDirty; m < numMarks; m++ {
		t.clearBit(n, i, m)
	}
	n.slots[i] = nil
	n.marks[markPresent] &^= 1 << i
	t.shrinkIfEmpty(n)
	return true
}

// shrinkIfEmpty frees n and its ancestors that are left empty.
func (t *pageTree) shrinkIfEmpty(n *radixNode) {
	for n != nil && n.marks[markPresent] == 0 {
		parent, i := n.parent, int(n.offset)
		t.nodes.put(n)
		if parent == nil {
			t.root = nil
			return
		}
		parent.slots[i] = nil
		parent.marks[markPresent] &^= 1 << i
		n = parent
	}
}

// setMark gives p mark m; true if p is in the tree and was not marked.
func (t *pageTree) setMark(p *Page, m int) bool {
	n, i := t.leaf(p.Index)
	if n == nil || n.page(i) != p || n.marks[m]&(1<<i) != 0 {
		return false
	}
	for n != nil && n.marks[m]&(1<<i) == 0 {
		n.marks[m] |= 1 << i
		n, i = n.parent, int(n.offset)
	}
	return true
}

// clearMark takes mark m from p; true if p is in the tree and had it.
func (t *pageTree) clearMark(p *Page, m int) bool {
	n, i := t.leaf(p.Index)
	if n == nil || n.page(i) != p || n.marks[m]&(1<<i) == 0 {
		return false
	}
	t.clearBit(n, i, m)
	return true
}

// clearBit clears mark m of slot i of n and of the ancestors it leaves
// with no marked descendant.
func (t *pageTree) clearBit(n *radixNode, i int, m int) {
	for n != nil && n.marks[m]&(1<<i) != 0 {
		n.marks[m] &^= 1 << i
		if n.marks[m] != 0 {
			return
		}
		n, i = n.parent, int(n.offset)
	}
}

// marked reports whether p is in the tree with mark m.
func (t *pageTree) marked(p *Page, m int) bool {
	n, i := t.leaf(p.Index)
	return n != nil && n.page(i) == p && n.marks[m]&(1<<i) != 0
}

// gang fills out with the pages carrying mark m (markPresent: every page)
// from index to end inclusive, in index order, and returns how many.
func (t *pageTree) gang(index, end uint64, m int, out []*Page) int {
	k := 0
	for k < len(out) && index <= end && t.root != nil {
		p := t.root.first(index, m)
		if p == nil || p.Index > end {
			break
		}
		out[k] = p
		k++
		if p.Index == ^uint64(0) {
			break
		}
		index = p.Index + 1
	}
	return k
}

// first returns the first page carrying mark m at index or after it,
// within n's span (the bits of index above it are ignored).
func (n *radixNode) first(index uint64, m int) *Page {
	if n.parent == nil && !n.covers(index) {
		return nil // past the root's span
	}
	off := int(index>>n.shift) & radixMask
	for off < radixSize {
		w := n.marks[m] >> off << off
		if w == 0 {
			return nil
		}
		o := bits.TrailingZeros64(w)
		if n.shift == 0 {
			return n.page(o)
		}
		sub := index
		if o != off {
			sub = 0 // a later child: from its start
		}
		if p := n.child(o).first(sub, m); p != nil {
			return p
		}
		off, index = o+1, 0
	}
	return nil
}
