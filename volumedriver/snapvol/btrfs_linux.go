package snapvol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// btrfs ioctls (linux/btrfs.h); x/sys/unix does not carry them.
const (
	iocSubvolCreate  = 0x5000940E // _IOW(0x94, 14, btrfs_ioctl_vol_args)
	iocSnapDestroy   = 0x5000940F // _IOW(0x94, 15, btrfs_ioctl_vol_args)
	iocSnapCreateV2  = 0x50009417 // _IOW(0x94, 23, btrfs_ioctl_vol_args_v2)
	iocSubvolGetFlag = 0x80089419 // _IOR(0x94, 25, u64)
	iocSubvolSetFlag = 0x4008941A // _IOW(0x94, 26, u64)
	subvolRdonly     = 1 << 1
	btrfsSuperMagic  = 0x9123683E
	iocFiemap        = 0xC020660B // _IOWR('f', 11, struct fiemap)
	iocTreeSearch    = 0xD0009411 // _IOWR(0x94, 17, btrfs_ioctl_search_args)
	iocGetSubvolInfo = 0x81F8943C // _IOR(0x94, 60, btrfs_ioctl_get_subvol_info_args)
	inodeItemKey     = 1          // BTRFS_INODE_ITEM_KEY
)

// volArgs is struct btrfs_ioctl_vol_args (4096 bytes).
type volArgs struct {
	fd   int64
	name [4088]byte
}

// volArgsV2 is struct btrfs_ioctl_vol_args_v2 (4096 bytes).
type volArgsV2 struct {
	fd      int64
	transid uint64
	flags   uint64
	unused  [4]uint64
	name    [4040]byte
}

// IsBtrfs reports whether dir lives on a btrfs file system.
func IsBtrfs(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false
	}
	return uint32(st.Type) == btrfsSuperMagic
}

func ioctl(fd uintptr, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

func openDir(dir string) (*os.File, error) {
	return os.OpenFile(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
}

// CreateSubvolume makes an empty subvolume at path (its parent must exist).
func CreateSubvolume(path string) error {
	parent, err := openDir(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("create subvolume %s: %w", path, err)
	}
	defer parent.Close()
	var a volArgs
	copy(a.name[:], filepath.Base(path))
	if err := ioctl(parent.Fd(), iocSubvolCreate, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("create subvolume %s: %w", path, err)
	}
	return nil
}

// Snapshot makes dst a snapshot of the subvolume src; readonly makes it a
// read-only one. btrfs flushes src's dirty data first and commits, so the
// snapshot holds every write src had when it was taken, durably.
func Snapshot(src, dst string, readonly bool) error {
	s, err := openDir(src)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", src, err)
	}
	defer s.Close()
	parent, err := openDir(filepath.Dir(dst))
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", src, err)
	}
	defer parent.Close()
	a := volArgsV2{fd: int64(s.Fd())}
	if readonly {
		a.flags = subvolRdonly
	}
	copy(a.name[:], filepath.Base(dst))
	if err := ioctl(parent.Fd(), iocSnapCreateV2, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("snapshot %s → %s: %w", src, dst, err)
	}
	return nil
}

// DeleteSubvolume removes the subvolume at path with everything in it. A
// path that does not exist is not an error.
func DeleteSubvolume(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	parent, err := openDir(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("delete subvolume %s: %w", path, err)
	}
	defer parent.Close()
	var a volArgs
	copy(a.name[:], filepath.Base(path))
	if err := ioctl(parent.Fd(), iocSnapDestroy, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("delete subvolume %s: %w", path, err)
	}
	return nil
}

// SetReadOnly makes the subvolume at path read-only (every write, also
// through files already open, fails with EROFS) or writable again.
func SetReadOnly(path string, ro bool) error {
	f, err := openDir(path)
	if err != nil {
		return fmt.Errorf("set read-only %s: %w", path, err)
	}
	defer f.Close()
	var flags uint64
	if err := ioctl(f.Fd(), iocSubvolGetFlag, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("set read-only %s: %w", path, err)
	}
	if ro {
		flags |= subvolRdonly
	} else {
		flags &^= subvolRdonly
	}
	if err := ioctl(f.Fd(), iocSubvolSetFlag, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("set read-only %s: %w", path, err)
	}
	return nil
}

// ReadOnly reports whether the subvolume at path is read-only.
func ReadOnly(path string) (bool, error) {
	f, err := openDir(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var flags uint64
	if err := ioctl(f.Fd(), iocSubvolGetFlag, unsafe.Pointer(&flags)); err != nil {
		return false, err
	}
	return flags&subvolRdonly != 0, nil
}

// extent is one mapping of a file's bytes to the disk, as FIEMAP reports it.
type extent struct {
	logical, physical, length uint64
	flags                     uint32
}

const (
	fiemapLast      = 0x1
	fiemapUnknown   = 0x2
	fiemapDelalloc  = 0x4
	fiemapEncoded   = 0x8
	fiemapInline    = 0x200
	fiemapTail      = 0x400
	fiemapUnwritten = 0x800
	// extents whose physical address does not identify their content
	fiemapNoIdentity = fiemapUnknown | fiemapDelalloc | fiemapEncoded | fiemapInline | fiemapTail
)

// extents lists the extents of the open file f.
func extents(f *os.File) ([]extent, error) {
	const batch = 256
	const hdr, ext = 32, 56
	buf := make([]byte, hdr+batch*ext)
	var out []extent
	start := uint64(0)
	for {
		clear(buf)
		*(*uint64)(unsafe.Pointer(&buf[0])) = start
		*(*uint64)(unsafe.Pointer(&buf[8])) = ^uint64(0) - start
		*(*uint32)(unsafe.Pointer(&buf[24])) = batch
		if err := ioctl(f.Fd(), iocFiemap, unsafe.Pointer(&buf[0])); err != nil {
			return nil, fmt.Errorf("fiemap %s: %w", f.Name(), err)
		}
		n := int(*(*uint32)(unsafe.Pointer(&buf[20])))
		if n == 0 {
			return out, nil
		}
		last := false
		for i := 0; i < n; i++ {
			p := buf[hdr+i*ext:]
			e := extent{
				logical:  *(*uint64)(unsafe.Pointer(&p[0])),
				physical: *(*uint64)(unsafe.Pointer(&p[8])),
				length:   *(*uint64)(unsafe.Pointer(&p[16])),
				flags:    *(*uint32)(unsafe.Pointer(&p[40])),
			}
			last = e.flags&fiemapLast != 0
			e.flags &^= fiemapLast
			out = append(out, e)
			start = e.logical + e.length
		}
		if last || n < batch {
			return out, nil
		}
	}
}

// searchArgs is struct btrfs_ioctl_search_args: a search key (104 bytes)
// and the buffer the kernel fills with (header, item) pairs.
type searchArgs struct {
	treeID                   uint64 // 0: the subvolume of the fd
	minObjectID, maxObjectID uint64
	minOffset, maxOffset     uint64
	minTransid, maxTransid   uint64
	minType, maxType         uint32
	nrItems                  uint32
	_                        uint32
	_                        [4]uint64
	buf                      [4096 - 104]byte
}

// Search headers (struct btrfs_ioctl_search_header) are 32 bytes; in an
// inode item (struct btrfs_inode_item) transid is at 8 and sequence at 72.
const (
	searchHeader   = 32
	inodeTransidAt = 8
	inodeSeqAt     = 72
)

// treeItem is one item a tree search returned: its key and its body.
type treeItem struct {
	objectID uint64
	typ      uint32
	offset   uint64
	body     []byte // valid only during the callback
}

// treeSearch runs one BTRFS_IOC_TREE_SEARCH on the subvolume of f for the
// key range and transactions in a (a.nrItems is the most items wanted) and
// calls each, if not nil, with every item found, in key order. It returns
// how many items the kernel found and the last one's key. what names f in
// errors.
func treeSearch(f *os.File, what string, a *searchArgs, each func(treeItem)) (n uint32, last treeItem, err error) {
	if err := ioctl(f.Fd(), iocTreeSearch, unsafe.Pointer(a)); err != nil {
		return 0, last, fmt.Errorf("tree search %s: %w", what, err)
	}
	b, off := a.buf[:], 0
	for i := uint32(0); i < a.nrItems; i++ {
		if off+searchHeader > len(b) {
			return 0, last, fmt.Errorf("tree search %s: short result", what)
		}
		l := int(binary.NativeEndian.Uint32(b[off+28:]))
		if off+searchHeader+l > len(b) {
			return 0, last, fmt.Errorf("tree search %s: item overruns the result", what)
		}
		last = treeItem{
			objectID: binary.NativeEndian.Uint64(b[off+8:]),
			offset:   binary.NativeEndian.Uint64(b[off+16:]),
			typ:      binary.NativeEndian.Uint32(b[off+24:]),
			body:     b[off+searchHeader : off+searchHeader+l],
		}
		if each != nil {
			each(last)
		}
		off += searchHeader + l
	}
	last.body = nil
	return a.nrItems, last, nil
}

// InodeVersion returns the transaction that last changed the inode of
// the open file f, and its change sequence, read from the btrfs tree of
// f's subvolume. Two snapshots of one subvolume give the same pair for a
// file exactly when its inode was not touched between them — including
// data that reached the disk after a write whose times and size were
// already seen, which a stat cannot tell.
func InodeVersion(f *os.File) (transid, seq uint64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, 0, err
	}
	a := &searchArgs{minObjectID: st.Ino, maxObjectID: st.Ino, maxOffset: ^uint64(0),
		maxTransid: ^uint64(0), minType: inodeItemKey, maxType: inodeItemKey, nrItems: 1}
	var body []byte
	n, _, err := treeSearch(f, f.Name(), a, func(it treeItem) { body = it.body })
	switch {
	case err != nil:
		return 0, 0, err
	case n == 0:
		return 0, 0, fmt.Errorf("tree search %s: no inode item %d", f.Name(), st.Ino)
	case len(body) < inodeSeqAt+8:
		return 0, 0, fmt.Errorf("tree search %s: short inode item (%d bytes)", f.Name(), len(body))
	}
	return binary.NativeEndian.Uint64(body[inodeTransidAt:]), binary.NativeEndian.Uint64(body[inodeSeqAt:]), nil
}

// subvolInfo is struct btrfs_ioctl_get_subvol_info_args (504 bytes).
type subvolInfo struct {
	treeID                  uint64
	name                    [256]byte
	parentID, dirID         uint64
	generation, flags       uint64
	uuid, parentUUID, rUUID [16]byte
	ctransid, otransid      uint64
	stransid, rtransid      uint64
	times                   [4][16]byte
	_                       [8]uint64
}

var (
	_ [4096]byte = [unsafe.Sizeof(searchArgs{})]byte{}
	_ [504]byte  = [unsafe.Sizeof(subvolInfo{})]byte{}
)

// CreatedIn returns the transaction in which the subvolume (a snapshot)
// at path was made: everything the source held up to and including it is
// in the snapshot.
func CreatedIn(path string) (uint64, error) {
	f, err := openDir(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var si subvolInfo
	if err := ioctl(f.Fd(), iocGetSubvolInfo, unsafe.Pointer(&si)); err != nil {
		return 0, fmt.Errorf("subvolume info %s: %w", path, err)
	}
	return si.otransid, nil
}

// ChangedSince reports whether the subvolume at path holds any tree item
// written after transaction transid: a file's data landing on the disk
// counts even when no time or size changed. The kernel skips every tree
// block older than that, so this costs a few block reads.
func ChangedSince(path string, transid uint64) (bool, error) {
	f, err := openDir(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	a := &searchArgs{maxObjectID: ^uint64(0), maxOffset: ^uint64(0), minTransid: transid + 1,
		maxTransid: ^uint64(0), maxType: ^uint32(0), nrItems: 1}
	n, _, err := treeSearch(f, path, a, nil)
	return n > 0, err
}

// ChangedInodes returns the inode numbers whose inode items lie in tree
// blocks of the subvolume at dir written after transaction since: a
// superset of the inodes touched since then (btrfs copies a block on every
// change, stamping it with the transaction). Blocks older than that are
// never read, so a generation costs what changed, not the tree's size.
func ChangedInodes(dir string, since uint64) (map[uint64]bool, error) {
	f, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[uint64]bool{}
	a := &searchArgs{}
	var minObj, minOff uint64
	var minType uint32
	for {
		*a = searchArgs{minObjectID: minObj, maxObjectID: ^uint64(0), minOffset: minOff, maxOffset: ^uint64(0),
			minTransid: since + 1, maxTransid: ^uint64(0), minType: minType, maxType: ^uint32(0), nrItems: 4096}
		n, last, err := treeSearch(f, dir, a, func(it treeItem) {
			if it.typ == inodeItemKey {
				out[it.objectID] = true
			}
		})
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return out, nil
		}
		// next key after the last one returned
		switch obj, typ, off := last.objectID, last.typ, last.offset; {
		case off < ^uint64(0):
			minObj, minType, minOff = obj, typ, off+1
		case typ < ^uint32(0):
			minObj, minType, minOff = obj, typ+1, 0
		case obj < ^uint64(0):
			minObj, minType, minOff = obj+1, 0, 0
		default:
			return out, nil
		}
	}
}
