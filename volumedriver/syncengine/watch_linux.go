package syncengine

import (
	"os"

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
func startWriteback(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	f.Close()
}
