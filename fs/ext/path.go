package ext

import (
	"fmt"
	"strings"
)

const (
	// maxSymlinkFollows bounds symbolic links met while resolving one
	// path (the kernel's MAXSYMLINKS).
	maxSymlinkFollows = 40
	// maxPathLen bounds a path as PATH_MAX does.
	maxPathLen = 4096
)

// splitPath checks a caller's path and returns its components. Paths are
// absolute ("/" is the root); a single trailing slash is allowed and
// demands a directory. Empty components (repeated slashes), "." and ".."
// are refused rather than interpreted: a caller never reaches something
// other than what it spelled, and a server in front of this package has
// nothing to sanitise. Names are at most 255 bytes and hold no NUL.
func splitPath(p string) (comps []string, trailing bool, err error) {
	bad := func(why string) ([]string, bool, error) {
		return nil, false, fmt.Errorf("%w %q: %s", ErrInvalidPath, p, why)
	}
	switch {
	case p == "":
		return bad("empty")
	case p[0] != '/':
		return bad("not absolute (must start with /)")
	case len(p) > maxPathLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxPathLen))
	case strings.IndexByte(p, 0) >= 0:
		return bad("contains a NUL byte")
	}
	if p == "/" {
		return nil, false, nil
	}
	rest := p[1:]
	if strings.HasSuffix(rest, "/") {
		trailing = true
		rest = rest[:len(rest)-1]
	}
	comps = strings.Split(rest, "/")
	for _, c := range comps {
		switch {
		case c == "":
			return bad("empty component (repeated slash)")
		case c == "." || c == "..":
			return bad(fmt.Sprintf("%q component", c))
		case len(c) > maxNameLen:
			return bad(fmt.Sprintf("component of %d bytes (at most %d)", len(c), maxNameLen))
		}
	}
	return comps, trailing, nil
}

// IsStagingPath reports whether p, as spelled, is StagingDir or a path
// under it. Resolution refuses every other way into the staging
// directory (ErrHidden), so a server refusing these paths keeps its
// clients out of it whatever links the volume holds.
func IsStagingPath(p string) bool {
	return strings.HasPrefix(p, StagingDir) && (len(p) == len(StagingDir) || p[len(StagingDir)] == '/')
}

// IsStagingEntry reports whether the entry name of the directory with
// inode dir is the staging directory, however that directory was reached:
// a listing of the root through a link to it leaves this entry out too.
func IsStagingEntry(dir uint32, name string) bool { return dir == rootIno && name == stagingName }

// resolve walks comps from the root. Symbolic links met before the last
// component are followed, and the last one too when followLast is set;
// link targets are resolved inside the volume (an absolute target starts
// at its root, ".." never climbs above it). Stepping into StagingDir after
// a link was followed is ErrHidden (see IsStagingPath). The returned node
// is referenced; release it.
func (v *Volume) resolve(comps []string, followLast bool) (*node, error) {
	type frame struct {
		n    *node
		name string
	}
	root, err := v.getNode(rootIno)
	if err != nil {
		return nil, err
	}
	// stack holds the directories from the root to the current one, each
	// referenced; release drops them all. Both start in arrays on the
	// goroutine's stack: a usual path walks without allocating them.
	var stackArr [8]frame
	stack := append(stackArr[:0], frame{root, "/"})
	release := func() {
		for _, f := range stack {
			v.putNode(f.n)
		}
	}
	var queueArr [8]string
	queue := append(queueArr[:0], comps...)
	links := 0
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		top := stack[len(stack)-1].n
		switch name {
		case "", ".":
			// Only symlink targets produce these.
			if !top.inode().IsDir() {
				release()
				return nil, ErrNotDir
			}
			continue
		case "..":
			if !top.inode().IsDir() {
				release()
				return nil, ErrNotDir
			}
			if len(stack) > 1 {
				v.putNode(top)
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if !top.inode().IsDir() {
			release()
			return nil, fmt.Errorf("%w: %q", ErrNotDir, stack[len(stack)-1].name)
		}
		ino, err := v.lookupIn(top, name)
		if err != nil {
			release()
			if err == ErrNotFound {
				return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
			}
			return nil, err
		}
		if ino != rootIno && ino < v.sb.FirstIno {
			release()
			return nil, fmt.Errorf("%w: entry %q points to reserved inode %d", ErrCorrupt, name, ino)
		}
		child, err := v.getNode(ino)
		if err != nil {
			release()
			return nil, err
		}
		if child.inode().Type() == TypeSymlink && (len(queue) > 0 || followLast) {
			links++
			target, err := v.readlinkNode(child)
			v.putNode(child)
			if err != nil {
				release()
				return nil, err
			}
			if links > maxSymlinkFollows {
				release()
				return nil, ErrLoop
			}
			if strings.HasPrefix(target, "/") {
				for _, f := range stack[1:] {
					v.putNode(f.n)
				}
				stack = stack[:1]
			}
			queue = append(strings.Split(target, "/"), queue...)
			continue
		}
		if len(stack) == 1 && name == stagingName && links > 0 {
			// Directories have one parent, so the staging directory is
			// entered only from the root by its name; without a link
			// followed, that name is the caller's first component.
			v.putNode(child)
			release()
			return nil, fmt.Errorf("%w: %q", ErrHidden, StagingDir)
		}
		stack = append(stack, frame{child, name})
	}
	end := stack[len(stack)-1].n
	for _, f := range stack[:len(stack)-1] {
		v.putNode(f.n)
	}
	return end, nil
}
