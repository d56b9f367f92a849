// Package atomicfile replaces files so that a crash leaves the old content
// or the new, never a torn or empty file: the data goes to a temporary in
// the same directory, is fsynced, renamed over the target, and the
// directory is fsynced so that the rename itself survives a power cut.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with data, created with perm. The temporary is
// named by [TempPattern]: a dot-name ending in ".tmp" and random digits, so
// that readers which go by extension (Traefik's file provider reads only
// .yml, .yaml and .toml) never read it.
func Write(path string, data []byte, perm os.FileMode) error {
	return WriteTemp(path, data, perm, TempPattern(filepath.Base(path)))
}

// TempPattern is the [os.CreateTemp] pattern [Write] names the temporaries
// of a file called base by. It is also a [filepath.Glob] pattern, for a
// caller that removes the temporaries a crash left behind.
func TempPattern(base string) string { return "." + base + ".tmp*" }

// WriteTemp is [Write] with the temporary named by pattern, as
// [os.CreateTemp] takes it (the last "*" becomes random digits), for a
// directory whose reader skips only some names, such as Syncthing's
// ".syncthing." prefix.
func WriteTemp(path string, data []byte, perm os.FileMode, pattern string) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicfile: sync %s: %w", dir, err)
	}
	return nil
}
