package snapvol

import (
	"bytes"
	"encoding/gob"
	"os"
	"path/filepath"
	"testing"
)

// FuzzApplyStream feeds a generation stream as a member would send it —
// any sequence of operations — to the applier: it must never panic nor
// touch anything outside the volume's root.
func FuzzApplyStream(f *testing.F) {
	seed := func(ms ...*msg) []byte {
		var b bytes.Buffer
		enc := gob.NewEncoder(&b)
		for _, m := range ms {
			enc.Encode(m)
		}
		return b.Bytes()
	}
	f.Add(seed(&msg{Kind: opDir, Path: "d", Mode: 0o755}, &msg{Kind: opFile, Path: "d/f", Fresh: true, Size: 3},
		&msg{Kind: opData, Off: 0, Data: []byte("abc")}, &msg{Kind: opEnd}))
	f.Add(seed(&msg{Kind: opSymlink, Path: "l", Target: "/"}, &msg{Kind: opFile, Path: "l/x", Fresh: true}))
	f.Add(seed(&msg{Kind: opFile, Path: "../x", Fresh: true}, &msg{Kind: opDelete, Path: "."}))
	f.Add(seed(&msg{Kind: opPunch, Off: -1, Len: 5}, &msg{Kind: opData, Off: 1 << 40}))
	f.Add([]byte{0xff, 0x00, 0x13})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		root := filepath.Join(dir, "root")
		os.Mkdir(root, 0o755)
		os.WriteFile(filepath.Join(dir, "outside"), []byte("keep"), 0o644)
		a := &applier{root: root}
		dec := gob.NewDecoder(bytes.NewReader(data))
		for i := 0; i < 64; i++ {
			m := new(msg)
			if dec.Decode(m) != nil {
				break
			}
			if m.Kind == opData && (m.Off < 0 || m.Off > 1<<24) {
				continue // a huge sparse offset is valid, only slow
			}
			if m.Size > 1<<24 {
				m.Size = 1 << 24
			}
			if a.apply(m) != nil {
				break
			}
		}
		a.finishFile()
		ents, _ := os.ReadDir(dir)
		if len(ents) != 2 {
			t.Fatalf("entries beside the root: %v", ents)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "outside")); string(b) != "keep" {
			t.Fatal("a file outside the root changed")
		}
	})
}
