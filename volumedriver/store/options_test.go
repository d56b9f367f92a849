package store

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"web", true},
		{"a", true},
		{"gogs_data-1.2", true},
		{strings.Repeat("x", MaxNameLen), true},
		{"", false},
		{".", false},
		{"..", false},
		{"../etc", false},
		{"a/b", false},
		{"/abs", false},
		{"-dash", false},
		{".hidden", false},
		{"sp ace", false},
		{"nul\x00", false},
		{"ünï", false},
		{strings.Repeat("x", MaxNameLen+1), false},
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) error %v is not ErrInvalidName", tc.name, err)
		}
	}
}

const devA = "MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZDMM-FZWI3DP-BONSGYY-LTMRWAD"

func TestParseOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		raw     map[string]string
		want    VolumeOptions
		wantErr string // substring; "" means success
	}{
		{name: "none", raw: nil, want: VolumeOptions{UID: -1, GID: -1, Remove: RemoveLocal}},
		{name: "owner and mode", raw: map[string]string{"uid": "1000", "gid": "33", "mode": "0750"},
			want: VolumeOptions{UID: 1000, GID: 33, Mode: 0o750, Remove: RemoveLocal}},
		{name: "sticky", raw: map[string]string{"mode": "1777"}, want: VolumeOptions{UID: -1, GID: -1, Mode: 0o777 | os.ModeSticky, Remove: RemoveLocal}},
		{name: "remove everywhere", raw: map[string]string{"remove": "everywhere"}, want: VolumeOptions{UID: -1, GID: -1, Remove: RemoveEverywhere}},
		{name: "mount timeout", raw: map[string]string{"mount-timeout": "20s"}, want: VolumeOptions{UID: -1, GID: -1, Remove: RemoveLocal, MountTimeout: 20 * time.Second}},
		{name: "share", raw: map[string]string{"share": strings.ToLower(devA) + " , " + strings.ReplaceAll(devA, "-", "")},
			want: VolumeOptions{UID: -1, GID: -1, Remove: RemoveLocal, Share: []string{devA, strings.ReplaceAll(devA, "-", "")}, ShareMode: ShareEncrypted}},
		{name: "share read-write", raw: map[string]string{"share": devA, "share-mode": "readwrite"},
			want: VolumeOptions{UID: -1, GID: -1, Remove: RemoveLocal, Share: []string{devA}, ShareMode: ShareReadWrite}},
		{name: "bad share mode", raw: map[string]string{"share": devA, "share-mode": "readonly"}, wantErr: "encrypted or readwrite"},
		{name: "share mode alone", raw: map[string]string{"share-mode": "encrypted"}, wantErr: "without share="},
		{name: "unknown", raw: map[string]string{"size": "10G"}, wantErr: `unknown option "size"; valid options: gid=`},
		{name: "bad uid", raw: map[string]string{"uid": "bob"}, wantErr: "uid=\"bob\" is not a numeric id"},
		{name: "negative gid", raw: map[string]string{"gid": "-1"}, wantErr: "is not a numeric id"},
		{name: "bad mode", raw: map[string]string{"mode": "0999"}, wantErr: "octal"},
		{name: "zero mode", raw: map[string]string{"mode": "0"}, wantErr: "octal"},
		{name: "bad remove", raw: map[string]string{"remove": "all"}, wantErr: "local or everywhere"},
		{name: "bad timeout", raw: map[string]string{"mount-timeout": "soon"}, wantErr: "duration"},
		{name: "huge timeout", raw: map[string]string{"mount-timeout": "1h"}, wantErr: "duration"},
		{name: "snapshots", raw: map[string]string{"replication": "snapshots"}, want: VolumeOptions{UID: -1, GID: -1, Remove: RemoveLocal, Replication: ReplicationSnapshots}},
		{name: "bad replication", raw: map[string]string{"replication": "sometimes"}, wantErr: "snapshots or files"},
		{name: "share needs files", raw: map[string]string{"replication": "snapshots", "share": "ABCDEFG-ABCDEFG-ABCDEFG-ABCDEFG-ABCDEFG-ABCDEFG-ABCDEFG-ABCDEFG"}, wantErr: "replication=files"},
		{name: "share with address", raw: map[string]string{"share": strings.ToLower(devA) + "@nas.lan:22000"},
			want: VolumeOptions{UID: -1, GID: -1, Remove: RemoveLocal, Share: []string{devA + "@nas.lan:22000"}, ShareMode: ShareEncrypted}},
		{name: "bad device address", raw: map[string]string{"share": devA + "@bad address"}, wantErr: "device IDs"},
		{name: "bad device", raw: map[string]string{"share": "NOTADEVICE"}, wantErr: "device IDs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseOptions(tc.raw)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidOption) {
					t.Fatalf("ParseOptions(%v) error = %v, want one containing %q", tc.raw, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), "remove=local|everywhere") {
					t.Errorf("error %q does not name the valid options", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseOptions(%v): %v", tc.raw, err)
			}
			if got.UID != tc.want.UID || got.GID != tc.want.GID || got.Mode != tc.want.Mode || got.Remove != tc.want.Remove ||
				got.MountTimeout != tc.want.MountTimeout || strings.Join(got.Share, ",") != strings.Join(tc.want.Share, ",") || got.ShareMode != tc.want.ShareMode {
				t.Fatalf("ParseOptions(%v) = %+v, want %+v", tc.raw, got, tc.want)
			}
			// Round trip: the rendered options parse to the same thing.
			again, err := ParseOptions(got.Raw())
			if err != nil || !sameOptions(again.Raw(), got.Raw()) {
				t.Fatalf("round trip %v → %v (%v)", got.Raw(), again.Raw(), err)
			}
		})
	}
}

// TestRecordedShareKeepsItsMode: a volume recorded before share-mode
// existed shared in the clear, and keeps doing so after an upgrade (its
// devices are set up for it); a new one shares encrypted.
func TestRecordedShareKeepsItsMode(t *testing.T) {
	t.Parallel()
	dev := "MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZDMM-FZWI3DP-BONSGYY-LTMRWAD"
	old, err := parseRecorded(map[string]string{"share": dev})
	if err != nil || old.ShareMode != ShareReadWrite || old.Raw()["share-mode"] != "readwrite" {
		t.Fatalf("recorded share: %+v %v", old, err)
	}
	fresh, err := ParseOptions(map[string]string{"share": dev})
	if err != nil || fresh.ShareMode != ShareEncrypted || fresh.Raw()["share-mode"] != "encrypted" {
		t.Fatalf("new share: %+v %v", fresh, err)
	}
}
