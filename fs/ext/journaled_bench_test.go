package ext

import (
	"testing"
)

// BenchmarkSequentialWrite writes a 64 MiB file sequentially in 1 MiB
// writes, syncs it and unlinks it, on ext4 with a journal and without one,
// in one run: what journaling (ordered data, commits at each Sync and
// every 5 s) costs a streaming writer.
func BenchmarkSequentialWrite(b *testing.B) {
	const fileSize, chunk = 64 << 20, 1 << 20
	data := randBytes(42, chunk)
	for _, c := range []struct {
		name  string
		extra []string
	}{{"journal", nil}, {"nojournal", noJournal}} {
		b.Run(c.name, func(b *testing.B) {
			v := mustOpenImage(b, mkfs(b, "ext4", 4096, "", "512M", c.extra...), openOpts{rw: true})
			b.SetBytes(fileSize)
			for b.Loop() {
				f, err := v.Create("/seq", 0o644)
				if err != nil {
					b.Fatal(err)
				}
				for off := int64(0); off < fileSize; off += chunk {
					if _, err := f.WriteAt(data, off); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				f.Close()
				if err := v.Unlink("/seq"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
