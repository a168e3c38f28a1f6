package ext

import (
	"fmt"

	"github.com/mpaged/mpaged/mpage"
)

// inlineMapper serves an INLINE_DATA_FL file: its bytes (at most 60 in
// i_block plus the system.data attribute, always less than one block) are
// copied into the engine's page by the mapper itself, which answers
// MapUptodate so no device read happens.
type inlineMapper struct {
	ino  uint32
	data []byte // the file's bytes, len == i_size
}

func newInlineMapper(v *Volume, in *Inode) (*inlineMapper, error) {
	if !v.sb.HasIncompat(IncompatInlineData) {
		return nil, fmt.Errorf("%w: inode %d: inline data flag on a volume without inline_data", ErrCorrupt, in.Ino)
	}
	head, tail, err := in.inlineData()
	if err != nil {
		return nil, err
	}
	if in.Size > uint64(len(head)+len(tail)) || in.Size >= uint64(v.sb.BlockSize) {
		return nil, fmt.Errorf("%w: inode %d: size %d, but inline data holds %d bytes", ErrCorrupt, in.Ino, in.Size, len(head)+len(tail))
	}
	data := append(append(make([]byte, 0, len(head)+len(tail)), head...), tail...)
	return &inlineMapper{ino: in.Ino, data: data[:in.Size]}, nil
}

// MapBlocks implements mpage.BlockMapper: block 0 is filled from the inode,
// everything else is a hole (past EOF in practice).
func (m *inlineMapper) MapBlocks(bm *mpage.BlockMap) error {
	if bm.Create {
		return fmt.Errorf("%w: inode %d: allocation", ErrReadOnly, m.ino)
	}
	want := max(bm.Len, 1)
	bm.Flags, bm.PBlock, bm.Len = 0, 0, 1
	if bm.Block != 0 || len(m.data) == 0 {
		bm.Len = want
		return nil
	}
	if len(bm.Data) < len(m.data) {
		return fmt.Errorf("ext: inode %d: inline data of %d bytes for a %d-byte block", m.ino, len(m.data), len(bm.Data))
	}
	n := copy(bm.Data, m.data)
	clear(bm.Data[n:])
	bm.Flags = mpage.Mapped | mpage.MapUptodate
	return nil
}
