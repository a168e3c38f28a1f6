package drills

import (
	"context"
	"os/exec"
	"syscall"
)

// execCommand is exec.CommandContext: the process is killed when ctx
// ends.
func execCommand(ctx context.Context, bin string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, bin, args...)
}

// rusage is a finished command's peak RSS in bytes.
func rusage(cmd *exec.Cmd) (int64, bool) {
	if cmd.ProcessState == nil {
		return 0, false
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, false
	}
	return ru.Maxrss << 10, true
}
