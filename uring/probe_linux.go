package uring

import (
	"fmt"
	"unsafe"
)

// opcodeNames names the kernel's io_uring opcodes (enum io_uring_op, up to
// kernel 6.18) for Features.Ops.
var opcodeNames = [...]string{
	"NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED",
	"POLL_ADD", "POLL_REMOVE", "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG",
	"TIMEOUT", "TIMEOUT_REMOVE", "ACCEPT", "ASYNC_CANCEL", "LINK_TIMEOUT",
	"CONNECT", "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE", "STATX",
	"READ", "WRITE", "FADVISE", "MADVISE", "SEND", "RECV", "OPENAT2",
	"EPOLL_CTL", "SPLICE", "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE",
	"SHUTDOWN", "RENAMEAT", "UNLINKAT", "MKDIRAT", "SYMLINKAT", "LINKAT",
	"MSG_RING", "FSETXATTR", "SETXATTR", "FGETXATTR", "GETXATTR", "SOCKET",
	"URING_CMD", "SEND_ZC", "SENDMSG_ZC", "READ_MULTISHOT", "WAITID",
	"FUTEX_WAIT", "FUTEX_WAKE", "FUTEX_WAITV", "FIXED_FD_INSTALL",
	"FTRUNCATE", "BIND", "LISTEN", "RECV_ZC", "EPOLL_WAIT", "READV_FIXED",
	"WRITEV_FIXED", "PIPE",
}

func opcodeName(op int) string {
	if op < len(opcodeNames) {
		return opcodeNames[op]
	}
	return fmt.Sprintf("OP_%d", op)
}

// probe is the set of opcodes the kernel reports as supported.
type probe struct {
	ok        bool // the kernel answered IORING_REGISTER_PROBE
	supported [probeOps]bool
}

// has reports whether op is supported. Without a probe answer (kernels
// before 5.6) only the 5.1 baseline is assumed.
func (p *probe) has(op int) bool {
	if !p.ok {
		return op <= opWriteFixed
	}
	return op < len(p.supported) && p.supported[op]
}

// names lists the supported opcodes.
func (p *probe) names() []string {
	var out []string
	for op := range p.supported {
		if p.has(op) {
			out = append(out, opcodeName(op))
		}
	}
	return out
}

// probeOpcodes asks the kernel which opcodes it supports. buf is scratch
// memory outside the Go heap, at least probeBufSize bytes. It must run on
// the ring's thread: a SINGLE_ISSUER ring checks register calls too.
func probeOpcodes(ringFd int, buf []byte) (probe, error) {
	var p probe
	clear(buf[:probeBufSize])
	if _, err := sysRegister(ringFd, regProbe, unsafe.Pointer(&buf[0]), probeOps); err != nil {
		return p, fmt.Errorf("uring: probe: %w", err)
	}
	hdr := (*probeHeader)(unsafe.Pointer(&buf[0]))
	ops := unsafe.Slice((*probeOp)(unsafe.Pointer(&buf[unsafe.Sizeof(probeHeader{})])), hdr.opsLen)
	for _, o := range ops {
		if o.flags&probeOpSupported != 0 {
			p.supported[o.op] = true
		}
	}
	p.ok = true
	return p, nil
}

// probeBufSize is the room probeOpcodes needs.
const probeBufSize = int(unsafe.Sizeof(probeHeader{})) + probeOps*int(unsafe.Sizeof(probeOp{}))
