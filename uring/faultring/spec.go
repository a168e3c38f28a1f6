package faultring

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mpaged/mpaged/uring"
)

// ErrBadSpec wraps every refusal of ParseRule.
var ErrBadSpec = errors.New("faultring: bad rule spec")

var errnos = map[string]syscall.Errno{
	"EIO":       syscall.EIO,
	"ENOSPC":    syscall.ENOSPC,
	"EAGAIN":    syscall.EAGAIN,
	"EINTR":     syscall.EINTR,
	"EROFS":     syscall.EROFS,
	"EDQUOT":    syscall.EDQUOT,
	"ENODEV":    syscall.ENODEV,
	"ENXIO":     syscall.ENXIO,
	"ETIMEDOUT": syscall.ETIMEDOUT,
	"EBADF":     syscall.EBADF,
	"EINVAL":    syscall.EINVAL,
	"ECANCELED": syscall.ECANCELED,
}

var opByName = map[string]uring.Op{}

func init() {
	for o := uring.Op(0); int(o) < uring.NumOps; o++ {
		opByName[o.String()] = o
	}
}

// ParseRule reads a rule from the daemon's --fault flag syntax:
// comma-separated key=value pairs, for example
//
//	op=writev|write,off=0,end=1048576,errno=EIO,count=3
//	op=readv,prob=0.01,delay=20ms
//	op=writev,eagain,nth=2
//	op=readv,short=512
//
// Keys: name, op (ops joined by |), off, end, nth, count, prob, and one
// fault: errno=NAME, eagain, short=N (-1 for half), delay=DURATION.
func ParseRule(spec string) (Rule, error) {
	var r Rule
	faults := 0
	for _, field := range strings.Split(spec, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		key, val, hasVal := strings.Cut(field, "=")
		var err error
		switch key {
		case "name":
			r.Name = val
		case "op":
			r.Ops, err = parseOps(val)
		case "off":
			r.Off, err = parseNonNeg(val)
		case "end":
			r.End, err = parseNonNeg(val)
		case "nth":
			r.Nth, err = parseInt(val)
		case "count":
			r.Count, err = parseInt(val)
		case "prob":
			r.Prob, err = strconv.ParseFloat(val, 64)
			if err == nil && (r.Prob < 0 || r.Prob > 1 || r.Prob != r.Prob) {
				err = fmt.Errorf("probability %s outside [0,1]", val)
			}
		case "errno":
			e, ok := errnos[strings.ToUpper(val)]
			if !ok {
				err = fmt.Errorf("unknown errno %q", val)
			}
			r.Fault.Errno = e
			faults++
		case "eagain":
			if hasVal {
				err = fmt.Errorf("eagain takes no value")
			}
			r.Fault.Transient = true
			faults++
		case "short":
			r.Fault.Short, err = strconv.Atoi(val)
			if err == nil && r.Fault.Short == 0 {
				err = fmt.Errorf("short=0 injects nothing")
			}
			faults++
		case "delay":
			r.Fault.Delay, err = time.ParseDuration(val)
			if err == nil && r.Fault.Delay <= 0 {
				err = fmt.Errorf("delay must be positive")
			}
			faults++
		default:
			err = fmt.Errorf("unknown key %q", key)
		}
		if err != nil {
			return Rule{}, fmt.Errorf("%w: %q: %s: %v", ErrBadSpec, spec, field, err)
		}
	}
	if faults != 1 {
		return Rule{}, fmt.Errorf("%w: %q: want exactly one of errno=, eagain, short=, delay=", ErrBadSpec, spec)
	}
	if r.End != 0 && r.End <= r.Off {
		return Rule{}, fmt.Errorf("%w: %q: end %d not after off %d", ErrBadSpec, spec, r.End, r.Off)
	}
	return r, nil
}

func parseOps(val string) (OpMask, error) {
	var m OpMask
	for _, name := range strings.Split(val, "|") {
		o, ok := opByName[strings.ToLower(strings.TrimSpace(name))]
		if !ok {
			return 0, fmt.Errorf("unknown op %q", name)
		}
		m |= Ops(o)
	}
	return m, nil
}

func parseNonNeg(val string) (int64, error) {
	n, err := strconv.ParseInt(val, 0, 64)
	if err == nil && n < 0 {
		err = fmt.Errorf("negative %d", n)
	}
	return n, err
}

func parseInt(val string) (int, error) {
	n, err := strconv.Atoi(val)
	if err == nil && n < 0 {
		err = fmt.Errorf("negative %d", n)
	}
	return n, err
}
