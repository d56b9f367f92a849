package syncengine

import "github.com/syncthing/notify"

// watchEvents are the inotify events that hint a change worth scanning. A
// regular file's Create is ignored (its close-after-write follows) so a file
// being written is not hashed half-way; Syncthing's own watcher still
// covers files written without closing.
var watchEvents = []notify.Event{notify.Create, notify.Remove, notify.Rename, notify.InCloseWrite, notify.InAttrib}
