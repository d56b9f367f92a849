package store

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// BindMounter makes real bind mounts with mount(2). It needs CAP_SYS_ADMIN,
// which is why the plugin's manifest asks for it.
type BindMounter struct{}

var _ Mounter = BindMounter{}

// Mount bind-mounts the directory src onto dst. src itself must not be a
// symlink, and what ends up mounted must be the directory src named when
// Mount began: a directory swapped for a symlink meanwhile (a peer's
// change landing) is found by comparing device and inode, unmounted, and
// refused with ErrUnsafePath.
func (BindMounter) Mount(src, dst string) error {
	fd, err := unix.Open(src, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bind mount %s on %s: %w: %v", src, dst, ErrUnsafePath, err)
	}
	defer unix.Close(fd)
	var want, got unix.Stat_t
	if err := unix.Fstat(fd, &want); err != nil {
		return fmt.Errorf("bind mount %s on %s: %w", src, dst, err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s on %s: %w", src, dst, err)
	}
	if err := unix.Stat(dst, &got); err != nil || got.Dev != want.Dev || got.Ino != want.Ino {
		unix.Unmount(dst, unix.MNT_DETACH)
		return fmt.Errorf("bind mount %s on %s: %w: it changed while being mounted", src, dst, ErrUnsafePath)
	}
	return nil
}

// Unmount detaches the mount on dst, lazily so that a process still inside
// it never makes the call hang; no mount there is not an error.
func (BindMounter) Unmount(dst string) error {
	err := unix.Unmount(dst, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", dst, err)
}

// Mounted reports whether dst is a mount point, from /proc/self/mountinfo.
func (BindMounter) Mounted(dst string) (bool, error) {
	dst, err := filepath.EvalSymlinks(dst)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// fields: id parent major:minor root mountpoint options ...
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == dst {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescapeMountinfo undoes the octal escapes (\040 for space …) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var n int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &n); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// openDirBeneath opens root/rel as an O_PATH directory without following
// any symlink below root and without ever leaving it: rel lies in a volume
// other devices write (a files volume's data directory is inside the
// replicated folder), so any of its components may have been replaced by
// a symlink to another volume or to the node's key. root itself is the
// plugin's own (trusted) path. The caller closes the descriptor.
func openDirBeneath(root, rel string) (int, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rfd)
	fd, err := unix.Openat2(rfd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EPERM) {
		return -1, &os.PathError{Op: "open", Path: filepath.Join(root, rel), Err: err}
	}
	// No openat2 (before Linux 5.6, or filtered by seccomp): walk one
	// component at a time, refusing symlinks and "..".
	cur, err := unix.Dup(rfd)
	if err != nil {
		return -1, err
	}
	for _, part := range strings.Split(filepath.Clean(rel), "/") {
		if part == "" || part == "." {
			continue
		}
		if part == ".." {
			unix.Close(cur)
			return -1, &os.PathError{Op: "open", Path: filepath.Join(root, rel), Err: unix.EXDEV}
		}
		next, err := unix.Openat(cur, part, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(cur)
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: filepath.Join(root, rel), Err: err}
		}
		cur = next
	}
	return cur, nil
}
