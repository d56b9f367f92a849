package snapvol

import (
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
