package snapvol

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// opKind is what one message of a generation stream does.
type opKind uint8

const (
	opDelete  opKind = iota + 1 // remove Path (recursively)
	opDir                       // make directory Path (Mode, UID, GID)
	opSymlink                   // make symlink Path → Target
	opFile                      // start file Path: Fresh (create empty) or modify; Size, Mode, UID, GID, MTime
	opData                      // write Data at Off in the current file
	opPunch                     // make [Off, Off+Len) of the current file a hole
	opEnd                       // the generation is complete
)

// chunk bounds the data of one message.
const chunk = 1 << 20

// smallFile is the size below which a changed file is sent whole (its
// data may live inline in btrfs metadata, where extents say nothing).
const smallFile = 64 << 10

// diffStats counts what one generation carried.
type diffStats struct {
	Files, Deleted int
	Bytes          int64
}

// sendDiff emits the operations that turn the tree prev (a read-only
// snapshot, or "" for nothing) into the tree cur (another read-only
// snapshot of the same volume), then opEnd. Unchanged files (same inode,
// size, times and owner, and an inode btrfs did not touch in between)
// cost a stat and a tree look-up; changed ones send only the byte
// ranges whose extents differ, since btrfs never rewrites an extent two
// snapshots share. Sockets and device nodes are not replicated. changed
// (nil: none) shares the tree search for touched inodes between the
// peers a generation is sent to from the same base.
func sendDiff(prev, cur string, changed *changedInodes, emit func(*msg) error) (diffStats, error) {
	var st diffStats
	// Deletions first: whatever prev has that cur has not (or has as
	// another type). A removed directory goes whole.
	if prev != "" {
		err := filepath.WalkDir(prev, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(prev, p)
			if rel == "." {
				return nil
			}
			ci, cerr := os.Lstat(filepath.Join(cur, rel))
			if cerr == nil && ci.Mode().Type() == d.Type() {
				return nil
			}
			st.Deleted++
			if err := emit(&msg{Kind: opDelete, Path: rel}); err != nil {
				return err
			}
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		})
		if err != nil {
			return st, fmt.Errorf("diff %s: %w", prev, err)
		}
	}
	// touched: the inodes btrfs may have changed since prev was taken
	// (nil: unknown, ask each file); read only
	touched := changed.get(prev, cur)
	buf := make([]byte, chunk)
	err := filepath.WalkDir(cur, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(cur, p)
		ci, err := os.Lstat(p)
		if err != nil {
			return err
		}
		cs := ci.Sys().(*syscall.Stat_t)
		var ps *syscall.Stat_t
		if prev != "" {
			if pi, err := os.Lstat(filepath.Join(prev, rel)); err == nil && pi.Mode().Type() == ci.Mode().Type() {
				ps = pi.Sys().(*syscall.Stat_t)
			}
		}
		same := ps != nil && ps.Ino == cs.Ino && ps.Size == cs.Size && ps.Mtim == cs.Mtim &&
			ps.Ctim == cs.Ctim && ps.Mode == cs.Mode && ps.Uid == cs.Uid && ps.Gid == cs.Gid
		m := &msg{Path: rel, Mode: uint32(cs.Mode & 0o7777), UID: int(cs.Uid), GID: int(cs.Gid),
			MTime: cs.Mtim.Nano(), Size: cs.Size}
		switch ci.Mode().Type() {
		case fs.ModeDir:
			if same {
				return nil
			}
			m.Kind = opDir
			return emit(m)
		case fs.ModeSymlink:
			if same {
				return nil
			}
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m.Kind, m.Target = opSymlink, t
			return emit(m)
		case 0:
			if same && ((touched != nil && !touched[cs.Ino]) || unchangedInode(filepath.Join(prev, rel), p)) {
				return nil
			}
			st.Files++
			n, err := sendFile(p, filepath.Join(prev, rel), ps != nil && ps.Ino == cs.Ino, m, buf, emit)
			st.Bytes += n
			return err
		default:
			return nil // fifo, socket, device
		}
	})
	if err != nil {
		return st, fmt.Errorf("diff %s: %w", cur, err)
	}
	return st, emit(&msg{Kind: opEnd})
}

// unchangedInode reports whether the regular files at prevPath and
// curPath (the same inode in two snapshots of one lineage, whose stat
// already agrees) were left untouched between the snapshots. A stat is
// not enough: a snapshot taken while a write was landing can hold the
// write's size and times but not yet all of its data (btrfs moves the
// on-disk size with the first extent of the write to complete), and the
// rest, landing later, changes no time. Any doubt counts as changed.
func unchangedInode(prevPath, curPath string) bool {
	version := func(p string) (uint64, uint64, bool) {
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			return 0, 0, false
		}
		defer f.Close()
		t, s, err := InodeVersion(f)
		return t, s, err == nil
	}
	pt, ps, ok := version(prevPath)
	if !ok {
		return false
	}
	ct, cs, ok := version(curPath)
	return ok && pt == ct && ps == cs
}

// sendFile emits file m (opFile, then its data and holes). With base, the
// receiver holds prevPath's content and only changed ranges are sent.
func sendFile(curPath, prevPath string, base bool, m *msg, buf []byte, emit func(*msg) error) (int64, error) {
	f, err := os.Open(curPath)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	size := uint64(m.Size)
	var data, holes [][2]uint64
	if size > 0 {
		ce, err := extents(f)
		if err != nil {
			return 0, err
		}
		var pe []extent
		if base && size >= smallFile {
			pf, err := os.Open(prevPath)
			if err != nil {
				return 0, err
			}
			pe, err = extents(pf)
			pf.Close()
			if err != nil {
				return 0, err
			}
		} else {
			base = false
		}
		data, holes = changedRanges(pe, ce, size, base)
	}
	m.Kind, m.Fresh = opFile, !base
	if err := emit(m); err != nil {
		return 0, err
	}
	var sent int64
	for _, r := range data {
		for off := r[0]; off < r[1]; {
			n := min(r[1]-off, uint64(len(buf)))
			k, err := f.ReadAt(buf[:n], int64(off))
			if err != nil && !(errors.Is(err, io.EOF) && k > 0) {
				return sent, fmt.Errorf("read %s: %w", curPath, err)
			}
			if err := emit(&msg{Kind: opData, Off: int64(off), Data: buf[:k]}); err != nil {
				return sent, err
			}
			sent += int64(k)
			off += uint64(k)
		}
	}
	for _, h := range holes {
		if err := emit(&msg{Kind: opPunch, Off: int64(h[0]), Len: int64(h[1] - h[0])}); err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// changedRanges returns the byte ranges of a file of size bytes whose
// data cur does not share with prev (all of its data when !base), and
// with base, the ranges where cur has no extent but prev had one (holes
// punched since). A range is shared when prev maps it to the same disk
// bytes (btrfs splits an extent when part of it is rewritten, so the
// pieces are matched by address, not by extent). Extents whose address
// says nothing of their content (inline, delayed, encoded, unknown)
// always count as changed.
func changedRanges(prev, cur []extent, size uint64, base bool) (data, holes [][2]uint64) {
	add := func(rs [][2]uint64, a, b uint64) [][2]uint64 {
		b = min(b, size)
		if a >= b {
			return rs
		}
		if n := len(rs); n > 0 && rs[n-1][1] >= a {
			rs[n-1][1] = max(rs[n-1][1], b)
			return rs
		}
		return append(rs, [2]uint64{a, b})
	}
	byLogical := func(a, b extent) int { return cmp.Compare(a.logical, b.logical) }
	slices.SortFunc(cur, byLogical)
	slices.SortFunc(prev, byLogical)
	covered := uint64(0)
	for _, e := range cur {
		end := e.logical + e.length
		if base && e.logical > covered {
			holes = add(holes, covered, e.logical)
		}
		covered = max(covered, end)
		if !base || e.flags&fiemapNoIdentity != 0 {
			data = add(data, e.logical, end)
			continue
		}
		// Walk the prev extents overlapping e; what they map to the same
		// disk bytes is unchanged, the rest is data to send.
		pos := e.logical
		i := sort.Search(len(prev), func(i int) bool { return prev[i].logical+prev[i].length > e.logical })
		for ; i < len(prev) && prev[i].logical < end; i++ {
			p := prev[i]
			if p.flags&fiemapNoIdentity != 0 || p.flags&fiemapUnwritten != e.flags&fiemapUnwritten ||
				p.physical-p.logical != e.physical-e.logical {
				continue
			}
			a, b := max(p.logical, e.logical), min(p.logical+p.length, end)
			if a > pos {
				data = add(data, pos, a)
			}
			pos = max(pos, b)
		}
		if pos < end {
			data = add(data, pos, end)
		}
	}
	if base && covered < size {
		holes = add(holes, covered, size)
	}
	if base {
		holes = overlapping(holes, prev)
	}
	return data, holes
}

// overlapping keeps the holes that some prev extent covers part of (a
// hole in both needs nothing).
func overlapping(holes [][2]uint64, prev []extent) [][2]uint64 {
	out := holes[:0]
	for _, h := range holes {
		for _, e := range prev {
			if e.logical < h[1] && e.logical+e.length > h[0] {
				out = append(out, h)
				break
			}
		}
	}
	return out
}

// errBadPath is a stream naming a path outside the volume.
var errBadPath = errors.New("path outside the volume")

// safePath resolves rel below root, refusing absolute paths, "..", and
// parents that are not plain directories (a symlink planted by an earlier
// operation must not lead a write outside root).
func safePath(root, rel string) (string, error) {
	if rel == "." {
		return root, nil
	}
	c := filepath.Clean(rel)
	if c != rel || filepath.IsAbs(c) || c == ".." || strings.HasPrefix(c, "../") || strings.ContainsRune(c, 0) {
		return "", fmt.Errorf("%w: %q", errBadPath, rel)
	}
	p := root
	parts := strings.Split(c, "/")
	for _, part := range parts[:len(parts)-1] {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if err != nil {
			return "", fmt.Errorf("%w: %q: %v", errBadPath, rel, err)
		}
		if !fi.IsDir() {
			return "", fmt.Errorf("%w: %q: %s is not a directory", errBadPath, rel, p)
		}
	}
	return filepath.Join(root, c), nil
}

// applier applies a generation stream below root.
type applier struct {
	root string
	f    *os.File // current file
	cur  *msg     // its attributes
	st   diffStats
}

func (a *applier) apply(m *msg) error {
	switch m.Kind {
	case opData, opPunch:
		if a.f == nil {
			return errors.New("data outside a file")
		}
		if m.Kind == opData {
			a.st.Bytes += int64(len(m.Data))
			_, err := a.f.WriteAt(m.Data, m.Off)
			return err
		}
		if m.Len <= 0 || m.Off < 0 {
			return errors.New("bad hole")
		}
		return unix.Fallocate(int(a.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, m.Off, m.Len)
	}
	if err := a.finishFile(); err != nil {
		return err
	}
	if m.Kind == opEnd {
		return nil
	}
	p, err := safePath(a.root, m.Path)
	if err != nil {
		return err
	}
	switch m.Kind {
	case opDelete:
		if p == a.root {
			return fmt.Errorf("%w: cannot delete the root", errBadPath)
		}
		a.st.Deleted++
		return os.RemoveAll(p)
	case opDir:
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", m.Path)
		}
		return setAttrs(p, m, false)
	case opSymlink:
		os.Remove(p)
		if err := os.Symlink(m.Target, p); err != nil {
			return err
		}
		return os.Lchown(p, m.UID, m.GID)
	case opFile:
		if m.Size < 0 {
			return errors.New("negative size")
		}
		flags := os.O_RDWR
		if m.Fresh {
			os.RemoveAll(p)
			flags |= os.O_CREATE | os.O_EXCL
		}
		f, err := os.OpenFile(p, flags|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		a.f, a.cur = f, m
		a.st.Files++
		return nil
	}
	return fmt.Errorf("unknown operation %d", m.Kind)
}

func (a *applier) finishFile() error {
	if a.f == nil {
		return nil
	}
	f, m := a.f, a.cur
	a.f, a.cur = nil, nil
	err := f.Truncate(m.Size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return setAttrs(f.Name(), m, true)
}

func setAttrs(p string, m *msg, times bool) error {
	if err := os.Lchown(p, m.UID, m.GID); err != nil {
		return err
	}
	if err := os.Chmod(p, fs.FileMode(m.Mode&0o777)|modeBits(m.Mode)); err != nil {
		return err
	}
	if times {
		ts := []unix.Timespec{unix.NsecToTimespec(m.MTime), unix.NsecToTimespec(m.MTime)}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

func modeBits(m uint32) fs.FileMode {
	var o fs.FileMode
	if m&unix.S_ISUID != 0 {
		o |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		o |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		o |= fs.ModeSticky
	}
	return o
}

// changedInodes keeps ChangedInodes per (base, generation) pair: both are
// read-only snapshots, so the answer never changes, and a generation
// shipped to every peer from the same base is searched once, not once per
// peer. The zero value is ready; a nil one computes every time.
type changedInodes struct {
	mu sync.Mutex
	m  map[changedKey]*changedEntry
}

// changedKey names a pair by path and by the transaction each snapshot
// was made in, so a generation made again under the same name is not
// mistaken for the old one.
type changedKey struct {
	prev, cur         string
	prevMade, curMade uint64
}

type changedEntry struct {
	once    sync.Once
	touched map[uint64]bool
}

// changedPairs bounds the pairs kept: generations come and go, and the
// pairs in use at once are a few (one base per peer).
const changedPairs = 16

// get returns the inodes btrfs may have changed between the snapshots prev
// and cur, or nil when that is unknown (prev "" or a search failed). The
// map is shared: callers only read it.
func (c *changedInodes) get(prev, cur string) map[uint64]bool {
	if prev == "" {
		return nil
	}
	since, err := CreatedIn(prev)
	if err != nil {
		return nil
	}
	search := func() map[uint64]bool {
		touched, _ := ChangedInodes(cur, since)
		return touched
	}
	curMade, err := CreatedIn(cur)
	if c == nil || err != nil {
		return search()
	}
	k := changedKey{prev, cur, since, curMade}
	c.mu.Lock()
	e := c.m[k]
	if e == nil {
		if c.m == nil || len(c.m) >= changedPairs {
			c.m = map[changedKey]*changedEntry{}
		}
		e = &changedEntry{}
		c.m[k] = e
	}
	c.mu.Unlock()
	e.once.Do(func() { e.touched = search() })
	return e.touched
}
