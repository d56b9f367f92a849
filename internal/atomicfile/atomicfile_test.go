package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplaces(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	for _, want := range []string{"one", "two, longer"} {
		if err := Write(p, []byte(want), 0o640); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporaries left: %v", ents)
	}
}

func TestWriteMissingDir(t *testing.T) {
	t.Parallel()
	if err := Write(filepath.Join(t.TempDir(), "no", "f"), nil, 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestWriteTempPattern(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "v.json")
	if err := WriteTemp(p, []byte("x"), 0o600, ".syncthing.v.json.*.tmp"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "x" {
		t.Fatalf("read %q, %v", got, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporaries left: %v", ents)
	}
}

// A crash between CreateTemp and Rename leaves a file that TempPattern,
// used as a glob, finds, and whose extension is not the target's.
func TestTempPatternGlob(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f, err := os.CreateTemp(dir, TempPattern("edge.yml"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if ext := filepath.Ext(f.Name()); ext == ".yml" || ext == ".yaml" {
		t.Fatalf("temporary %s has the extension %s", f.Name(), ext)
	}
	got, _ := filepath.Glob(filepath.Join(dir, TempPattern("edge.yml")))
	if len(got) != 1 || got[0] != f.Name() {
		t.Fatalf("glob found %v, want [%s]", got, f.Name())
	}
}
