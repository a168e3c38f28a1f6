package ext

import (
	"bytes"
	"testing"
)

// BenchmarkReplaceFile replaces one 16 KiB file over and over (the
// daemon's PUT of an existing file): staging, the link over the old file,
// the old file's release, each made durable.
func BenchmarkReplaceFile(b *testing.B) {
	img := mkfs(b, "ext4", 4096, "", "64M", noJournal...)
	v := mustOpenImage(b, img, openOpts{rw: true})
	body := bytes.Repeat([]byte("x"), 16<<10)
	if _, _, err := v.ReplaceFile("/f", bytes.NewReader(body), 0o644, nil); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := v.ReplaceFile("/f", bytes.NewReader(body), 0o644, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := v.Close(); err != nil {
		b.Fatal(err)
	}
}
