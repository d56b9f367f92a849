package syncengine

import (
	"crypto/sha256"
	"regexp"
	"strings"
	"testing"

	"github.com/syncthing/syncthing/lib/protocol"
)

func TestFolderID(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`^sv-[a-z2-7]{20}$`)
	tests := []struct{ a, b string }{
		{"web", "web"},
		{"gogs", "gogs-data"},
		{"", " "},
		{"a/b", "a_b"},
	}
	for _, tc := range tests {
		t.Run(tc.a+"|"+tc.b, func(t *testing.T) {
			if FolderID(tc.a) != FolderID(tc.a) {
				t.Fatal("not deterministic")
			}
			if tc.a != tc.b && FolderID(tc.a) == FolderID(tc.b) {
				t.Fatalf("%q and %q collide", tc.a, tc.b)
			}
			if !re.MatchString(FolderID(tc.a)) {
				t.Fatalf("FolderID(%q) = %q, bad shape", tc.a, FolderID(tc.a))
			}
			if FolderID(tc.a) == RegistryFolderID {
				t.Fatal("collides with registry")
			}
		})
	}
	// Pinned: the ID is part of the wire contract with plain Syncthing
	// peers and must never change.
	if got, want := FolderID("web"), "sv-"+b32lower(sha256.Sum256([]byte("web")))[:20]; got != want {
		t.Fatalf("FolderID(web) = %s, want %s", got, want)
	}
	if got := FolderID("web"); got != "sv-jnpfp5xlf5blsa43hupb" {
		t.Fatalf("FolderID(web) changed: %s", got)
	}
}

func b32lower(sum [32]byte) string {
	const alpha = "abcdefghijklmnopqrstuvwxyz234567"
	var sb strings.Builder
	var buf uint64
	bits := 0
	for _, b := range sum {
		buf = buf<<8 | uint64(b)
		bits += 8
		for bits >= 5 {
			sb.WriteByte(alpha[(buf>>(bits-5))&31])
			bits -= 5
		}
	}
	return sb.String()
}

func devID(b byte) protocol.DeviceID {
	var id protocol.DeviceID
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

func TestMemberProof(t *testing.T) {
	t.Parallel()
	key := []byte("correct horse battery staple")
	a, b := devID(1), devID(2)
	nameA := memberName(key, a, memberLabel("home1", 22001))
	tests := []struct {
		name     string
		key      []byte
		id       protocol.DeviceID
		devName  string
		ok       bool
		wantPort int
	}{
		{"valid", key, a, nameA, true, 22001},
		{"wrong key", []byte("another key"), a, nameA, false, 0},
		{"replayed from another device", key, b, nameA, false, 0},
		{"label tampered", key, a, strings.Replace(nameA, "22001", "22002", 1), false, 0},
		{"no proof", key, a, "home1@22001", false, 0},
		{"empty", key, a, "", false, 0},
		{"plain syncthing name", key, a, "nas", false, 0},
		{"proof truncated", key, a, nameA[:len(nameA)-1], false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			port, ok := verifyMemberName(tc.key, tc.id, tc.devName)
			if ok != tc.ok || port != tc.wantPort {
				t.Fatalf("verify = (%d, %v), want (%d, %v)", port, ok, tc.wantPort, tc.ok)
			}
		})
	}
	if got := displayName(nameA); got != "home1@22001" {
		t.Fatalf("displayName = %q", got)
	}
	if got := memberLabel("we#ird@host", 1); got != "we_ird_host@1" {
		t.Fatalf("memberLabel sanitises separators: %q", got)
	}
}

func TestParseShare(t *testing.T) {
	t.Parallel()
	id := devID(7).String()
	tests := []struct {
		in string
		ok bool
	}{
		{id, true},
		{id + "@127.0.0.1:22000", true},
		{id + "@tcp://nas.lan:22000", true},
		{id + "@nas.lan", false},
		{"not-a-device", false},
		{"", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if err := ParseShare(tc.in); (err == nil) != tc.ok {
				t.Fatalf("ParseShare(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}

func TestVolumeName(t *testing.T) {
	t.Parallel()
	for _, n := range []string{"", ".", "..", "a/b", "x" + conflictMarker + "y", ".syncthing.x", strings.Repeat("a", 201)} {
		if validVolumeName(n) == nil {
			t.Errorf("%q accepted", n)
		}
	}
	for _, n := range []string{"web", "gogs_data", "a.b-c"} {
		if err := validVolumeName(n); err != nil {
			t.Errorf("%q refused: %v", n, err)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	t.Parallel()
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 5 << 20: "5.0 MiB"} {
		if got := humanBytes(in); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", in, got, want)
		}
	}
}
