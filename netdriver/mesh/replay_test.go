package mesh

import (
	"os"
	"regexp"
	"strconv"
	"testing"
)

// TestReplayWindowMatchesREADME: the README promises a replay window of a
// number of packets; the filter must keep exactly that many (it kept 1984
// while the README said 2048).
func TestReplayWindowMatchesREADME(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Skip("README not found:", err)
	}
	m := regexp.MustCompile(`(\d+)-packet replay window`).FindSubmatch(b)
	if m == nil {
		t.Fatal("README does not state the replay window")
	}
	n, _ := strconv.Atoi(string(m[1]))
	if n != windowSize {
		t.Fatalf("README says a %d-packet replay window, the filter keeps %d", n, windowSize)
	}
	// and it does keep exactly that many behind the highest counter
	var f replayFilter
	top := uint64(3 * windowSize)
	f.accept(top)
	if !f.check(top-uint64(n)) || f.check(top-uint64(n)-1) {
		t.Fatalf("window is not %d packets", n)
	}
}

func TestReplayFilter(t *testing.T) {
	t.Parallel()
	type step struct {
		ctr  uint64
		want bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{0, true}, {1, true}, {2, true}, {3, true}}},
		{"duplicate", []step{{0, true}, {1, true}, {1, false}, {0, false}}},
		{"out of order", []step{{5, true}, {2, true}, {4, true}, {3, true}, {2, false}, {6, true}}},
		{"edge of window", []step{{windowSize + 10, true}, {10, true}, {9, false}, {10, false}}},
		{"too old", []step{{20000, true}, {20000 - windowSize - 1, false}, {20000 - windowSize, true}}},
		{"window slides far", []step{{1, true}, {1 << 20, true}, {1, false}, {(1 << 20) - 1, true}, {1 << 20, false}}},
		{"slide by one block keeps bits", []step{{63, true}, {64, true}, {63, false}, {200, true}, {64, false}}},
		{"limit", []step{{rejectAfterMessages, false}, {rejectAfterMessages - 1, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var f replayFilter
			for i, s := range tt.steps {
				chk := f.check(s.ctr)
				if got := f.accept(s.ctr); got != s.want || chk != s.want {
					t.Fatalf("step %d counter %d: check %v accept %v, want %v", i, s.ctr, chk, got, s.want)
				}
			}
		})
	}
}

func TestReplayFilterExhaustiveWindow(t *testing.T) {
	t.Parallel()
	var f replayFilter
	// every counter in a shuffled order within the window is accepted once
	const n = 3 * windowSize
	for base := uint64(0); base < n; base += 100 {
		for i := uint64(99); ; i-- {
			if !f.accept(base + i) {
				t.Fatalf("counter %d rejected", base+i)
			}
			if i == 0 {
				break
			}
		}
	}
	for c := uint64(n - windowSize); c < n; c++ {
		if f.accept(c) {
			t.Fatalf("counter %d accepted twice", c)
		}
	}
}
