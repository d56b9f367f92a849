package syncengine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/syncthing/notify"
)

// maxPendingPaths bounds the paths one scan names; beyond it the whole
// folder is scanned.
const maxPendingPaths = 256

var debugScan = os.Getenv("SYNCENGINE_DEBUG_SCAN") != ""

// watcher is the fast path of one folder: inotify events and Touched hints
// are collected for ScanDebounce and handed to ScanFolderSubdirs at once,
// instead of waiting for Syncthing's watcher (whole seconds at best).
type watcher struct {
	e      *Engine
	folder string
	dir    string // as configured
	real   string // dir with symlinks resolved, to relativise event paths

	mu      sync.Mutex
	pending map[string]struct{}
	full    bool
	writing map[string]time.Time // modified, not yet closed: last event

	kick   chan struct{}
	evs    chan notify.EventInfo
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func (e *Engine) newWatcher(folder, dir string) *watcher {
	ctx, cancel := context.WithCancel(e.ctx)
	w := &watcher{
		e: e, folder: folder, dir: dir, real: dir,
		pending: map[string]struct{}{},
		writing: map[string]time.Time{},
		kick:    make(chan struct{}, 1),
		cancel:  cancel,
	}
	_ = os.MkdirAll(dir, 0o755)
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		w.real = r
	}
	w.evs = make(chan notify.EventInfo, 4096)
	if err := notify.Watch(filepath.Join(dir, "..."), w.evs, watchEvents...); err != nil {
		e.log.WithError(err).WithField("folder", folder).Warn("inotify watch failed; relying on Touched hints and Syncthing's watcher")
		notify.Stop(w.evs)
		w.evs = nil
	}
	w.done.Add(2)
	go w.collect(ctx)
	go w.scanLoop(ctx)
	return w
}

// stop ends the watcher and waits for its goroutines.
func (w *watcher) stop() {
	if w.evs != nil {
		notify.Stop(w.evs)
	}
	w.cancel()
	w.done.Wait()
}

// hint queues paths (relative to the folder root; none means everything)
// for scanning. It never blocks.
func (w *watcher) hint(paths ...string) {
	w.mu.Lock()
	if len(paths) == 0 {
		w.full = true
	}
	for _, p := range paths {
		p = filepath.Clean(strings.TrimPrefix(filepath.ToSlash(p), "/"))
		if p == "." || p == "" || strings.HasPrefix(p, "..") {
			w.full = true
			continue
		}
		w.pending[p] = struct{}{}
		delete(w.writing, p)
	}
	if len(w.pending) > maxPendingPaths {
		w.full = true
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *watcher) collect(ctx context.Context) {
	defer w.done.Done()
	if w.evs == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-w.evs:
			rel, err := filepath.Rel(w.real, ev.Path())
			if err != nil {
				if rel, err = filepath.Rel(w.dir, ev.Path()); err != nil {
					w.hint()
					continue
				}
			}
			base := filepath.Base(rel)
			if ev.Event() == notify.Write && strings.HasPrefix(base, ".syncthing.") && strings.HasSuffix(base, ".tmp") {
				w.e.queueWriteback(ev.Path()) // a file being pulled
				continue
			}
			if strings.HasPrefix(base, ".syncthing.") || strings.HasPrefix(base, "~syncthing~") ||
				rel == ".stfolder" || strings.HasPrefix(rel, ".stfolder"+string(filepath.Separator)) {
				continue
			}
			switch {
			case ev.Event() == notify.Write:
				w.mu.Lock()
				w.writing[filepath.Clean(rel)] = time.Now()
				w.mu.Unlock()
				continue
			case ev.Event() == notify.Create && createdByOpen(ev):
				if fi, err := os.Lstat(ev.Path()); err == nil && fi.Mode().IsRegular() {
					continue // wait for close-after-write
				}
			}
			w.hint(rel)
		}
	}
}

func (w *watcher) scanLoop(ctx context.Context) {
	defer w.done.Done()
	settle := time.NewTicker(w.e.opts.WriteSettle / 4)
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-settle.C:
			w.settleWrites()
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(w.e.opts.ScanDebounce):
		}
		w.mu.Lock()
		full := w.full
		var subs []string
		if !full {
			subs = make([]string, 0, len(w.pending))
			for p := range w.pending {
				subs = append(subs, p)
			}
		}
		w.pending = map[string]struct{}{}
		w.full = false
		w.mu.Unlock()
		if !full && len(subs) == 0 {
			continue
		}
		if debugScan {
			w.e.log.Infof("fast-path scan %s full=%v subs=%v", w.folder, full, subs)
		}
		for attempt := 0; attempt < 10; attempt++ {
			err := w.e.st.ScanFolderSubdirs(w.folder, subs)
			if err == nil || ctx.Err() != nil {
				break
			}
			// The folder may be starting right after a config change.
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// settleWrites hints files that were modified without being closed and
// have been quiet for WriteSettle.
func (w *watcher) settleWrites() {
	var quiet []string
	now := time.Now()
	w.mu.Lock()
	for p, t := range w.writing {
		if now.Sub(t) >= w.e.opts.WriteSettle {
			quiet = append(quiet, p)
		}
	}
	w.mu.Unlock()
	if len(quiet) > 0 {
		w.hint(quiet...)
	}
}

// touchFolder hints a change in a folder's fast path, if it runs here.
func (e *Engine) touchFolder(folder string, subdirs ...string) {
	e.mu.Lock()
	w := e.watchers[folder]
	e.mu.Unlock()
	if w != nil {
		w.hint(subdirs...)
	}
}

// Early writeback. Syncthing writes a pulled file into a temporary, fsyncs
// it and renames it into place. Left alone, the kernel keeps the whole file
// dirty until that fsync (background writeback starts at a share of RAM or
// after 30 s), so a large file waits for all its data to reach the disk at
// the very end. Asking the kernel to start writing the temporary out while
// the pull goes on (sync_file_range WRITE: asynchronous, no durability
// promise) leaves only the tail for the fsync, which still runs: the
// durability contract is unchanged.

// writebackEvery is the least time between two writeback requests for one
// temporary file.
const writebackEvery = 50 * time.Millisecond

// queueWriteback asks the writeback loop to start writing path out, at
// most every writebackEvery per file. It never blocks.
func (e *Engine) queueWriteback(path string) {
	now := time.Now()
	e.wbMu.Lock()
	last, ok := e.wbLast[path]
	if ok && now.Sub(last) < writebackEvery {
		e.wbMu.Unlock()
		return
	}
	if len(e.wbLast) > 64 { // forget files no longer written
		for p, t := range e.wbLast {
			if now.Sub(t) > time.Minute {
				delete(e.wbLast, p)
			}
		}
	}
	e.wbLast[path] = now
	e.wbMu.Unlock()
	select {
	case e.wbQueue <- path:
	default: // the loop is busy; a later write event asks again
	}
}

// writebackLoop starts the writeback of queued temporaries until the
// engine stops.
func (e *Engine) writebackLoop() {
	for {
		select {
		case <-e.ctx.Done():
			return
		case p := <-e.wbQueue:
			startWriteback(p)
		}
	}
}
