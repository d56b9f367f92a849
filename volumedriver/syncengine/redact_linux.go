package syncengine

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// RedactStdout sends everything this process writes to standard output —
// embedded Syncthing logs there, device names of members included — through
// RedactProofs on its way to the original standard output. Call it once,
// before the engine starts.
func RedactStdout() error {
	orig, err := unix.Dup(1)
	if err != nil {
		return fmt.Errorf("redact stdout: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		unix.Close(orig)
		return fmt.Errorf("redact stdout: %w", err)
	}
	if err := unix.Dup3(int(w.Fd()), 1, 0); err != nil {
		r.Close()
		w.Close()
		unix.Close(orig)
		return fmt.Errorf("redact stdout: %w", err)
	}
	w.Close() // fd 1 is the pipe's write end now
	go copyRedacted(os.NewFile(uintptr(orig), "stdout"), r)
	return nil
}
