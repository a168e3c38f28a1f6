package drills

import "testing"

// TestOnlyLeakedBlocks: the journaled kill row tolerates (and counts)
// blocks marked in use that nothing uses, and nothing else e2fsck -fn
// finds.
func TestOnlyLeakedBlocks(t *testing.T) {
	const head = "e2fsck 1.47.0 (5-Feb-2023)\nPass 1: Checking inodes, blocks, and sizes\nPass 2: Checking directory structure\n" +
		"Pass 3: Checking directory connectivity\nPass 4: Checking reference counts\nPass 5: Checking group summary information\n"
	const tail = "\n\nvol.img: ********** WARNING: Filesystem still has errors **********\n\nvol.img: 30/16384 files (33.3% non-contiguous), 10725/65536 blocks\n"
	for _, tc := range []struct {
		name   string
		out    string
		leaked int64
		ok     bool
	}{
		{"one block", head + "Block bitmap differences:  -58125\nFix? no\n" + tail, 1, true},
		{"runs and counts", head + "Block bitmap differences:  -32804 -(49185--49191)\nFix? no\n\nFree blocks count wrong for group #1 (5, counted=13).\nFix? no\n" + tail, 8, true},
		{"a block in use but not marked", head + "Block bitmap differences:  +58125\nFix? no\n" + tail, 0, false},
		{"an inode leaked too", head + "Block bitmap differences:  -58125\nFix? no\n\nInode bitmap differences:  -12305\nFix? no\n" + tail, 0, false},
		{"a pass 1 finding", "e2fsck 1.47.0\nPass 1: Checking inodes, blocks, and sizes\nInode 12 has an invalid extent node\n" + head[len("e2fsck 1.47.0 (5-Feb-2023)\nPass 1: Checking inodes, blocks, and sizes\n"):] + "Block bitmap differences:  -5\n" + tail, 0, false},
		{"nothing found", head + tail, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaked, ok := onlyLeakedBlocks(tc.out)
			if leaked != tc.leaked || ok != tc.ok {
				t.Errorf("onlyLeakedBlocks = %d, %v; want %d, %v", leaked, ok, tc.leaked, tc.ok)
			}
		})
	}
}
