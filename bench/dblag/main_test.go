package main

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestLags(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	acks := []time.Time{at(0), at(100), at(200), at(300), at(400)}
	probes := []probe{{at(150), 1}, {at(260), -1}, {at(350), 3}, {at(500), 3}}
	got, censored := lags(acks, probes, at(50), at(400), at(1000))
	want := []float64{0.25, 0.15, 0.7} // commit 2 → 350, 3 → 350, 4 never (crash − ack)
	if censored != 1 || len(got) != len(want) {
		t.Fatalf("lags %v censored %d", got, censored)
	}
	for i := range want {
		if d := got[i] - want[i]; d > 1e-9 || d < -1e-9 {
			t.Fatalf("lags %v, want %v", got, want)
		}
	}
}

func TestLostOf(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	acks := []time.Time{t0, t0.Add(time.Second), t0.Add(2 * time.Second)}
	crash := t0.Add(3 * time.Second)
	if l, o := lostOf(check{ok: true, present: 3}, acks, crash); l != 0 || o != 0 {
		t.Errorf("nothing lost: %v %v", l, o)
	}
	if l, o := lostOf(check{ok: true, present: 1, firstMissing: 2}, acks, crash); l != 2 || o != 2 {
		t.Errorf("two lost: %v %v", l, o)
	}
	if l, o := lostOf(check{err: "malformed"}, acks, crash); l != 3 || o != 3 {
		t.Errorf("unreadable: %v %v", l, o)
	}
}

// TestCheckDB runs the real sqlite3 on a database with a gap.
func TestCheckDB(t *testing.T) {
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Skip("no sqlite3")
	}
	t.Parallel()
	c := config{sqlite: "sqlite3"}
	db := filepath.Join(t.TempDir(), dbName)
	if _, err := sqlite(c, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, n INTEGER NOT NULL DEFAULT 0, b BLOB);"+
		"INSERT INTO t(id, ts) VALUES (1, 0), (2, 0), (3, 0), (5, 0);"); err != nil {
		t.Fatal(err)
	}
	if chk := checkDB(c, db, 6); !chk.ok || chk.present != 4 || chk.firstMissing != 4 {
		t.Errorf("gap: %+v", chk)
	}
	if chk := checkDB(c, db, 3); !chk.ok || chk.present != 3 || chk.firstMissing != 0 {
		t.Errorf("complete: %+v", chk)
	}
	if _, err := sqlite(c, db, "DELETE FROM t WHERE id = 1;"); err != nil {
		t.Fatal(err)
	}
	if chk := checkDB(c, db, 5); !chk.ok || chk.firstMissing != 1 {
		t.Errorf("first missing: %+v", chk)
	}
	if chk := checkDB(c, filepath.Join(t.TempDir(), "none", dbName), 5); chk.ok {
		t.Errorf("missing database passes: %+v", chk)
	}
}
