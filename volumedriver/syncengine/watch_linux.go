package syncengine

import (
	"github.com/syncthing/notify"
	"golang.org/x/sys/unix"
)

// watchEvents are the inotify events that hint a change worth scanning. A
// regular file's Create is ignored (its close-after-write follows) so a file
// being written is not hashed half-way; a Write (modify) without close is
// scanned once the file stayed quiet for WriteSettle.
var watchEvents = []notify.Event{notify.Create, notify.Remove, notify.Rename, notify.Write, notify.InCloseWrite, notify.InAttrib}

// createdByOpen reports whether a Create event comes from creating a new
// inode (open/mkdir) rather than from a rename into the watched tree.
func createdByOpen(ev notify.EventInfo) bool {
	if s, ok := ev.Sys().(*unix.InotifyEvent); ok {
		return s.Mask&unix.IN_CREATE != 0
	}
	return false
}

// startWriteback starts writing the dirty pages of path out to disk and
// returns without waiting for them (a file gone or renamed is ignored).
// path lies in a volume a container writes, so it may be anything but the
// Syncthing temporary its name says: it is opened without blocking (a FIFO
// with no writer would hang the open, and the plugin's shutdown with it)
// and without following a symlink, and only a regular file is acted on.
func startWriteback(path string) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return
	}
	_ = unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
