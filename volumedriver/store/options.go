package store

import (
	"errors"
	"fmt"
	"os"
	"regexp"

	"github.com/homeswarm/homeswarm/internal/volname"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors. Callers test them with errors.Is; the text that wraps
// them says what to do.
var (
	ErrInvalidName   = volname.ErrInvalid
	ErrInvalidOption = errors.New("invalid volume option")
	ErrNotFound      = errors.New("no such volume")
	ErrInUse         = errors.New("volume is in use")
	ErrClosed        = errors.New("store is closed")
	ErrUnsafePath    = errors.New("unsafe volume directory")
	ErrNotReplicated = errors.New("local changes not yet on any other node")
)

// MaxNameLen bounds a volume name (see package volname: one rule for
// every part of syncvol).
const MaxNameLen = volname.MaxLen

// ValidateName checks a volume name against Docker's own pattern and the
// length bound; the error wraps ErrInvalidName.
func ValidateName(name string) error { return volname.Validate(name) }

// RemoveMode says what `docker volume rm` does to a volume's data.
type RemoveMode string

const (
	// RemoveLocal drops this node's replica only; other nodes keep theirs.
	RemoveLocal RemoveMode = "local"
	// RemoveEverywhere deletes the volume on every node of the cluster.
	RemoveEverywhere RemoveMode = "everywhere"
)

// VolumeOptions are the validated `docker volume create -o` options.
// The zero value means: owned by root, mode 0755, local removal, the
// plugin-wide mount timeout, shared with no extra device.
type VolumeOptions struct {
	// UID and GID own the volume's root directory; -1 leaves root.
	UID, GID int
	// Mode is the permission of the volume's root directory; 0 means 0755.
	Mode os.FileMode
	// Remove is what `docker volume rm` does; "" means RemoveLocal.
	Remove RemoveMode
	// MountTimeout overrides the plugin's MOUNT_TIMEOUT; 0 uses it.
	MountTimeout time.Duration
	// Share lists plain Syncthing device IDs that also get this volume.
	Share []string
	// ShareMode is how they get it: ShareEncrypted (the default for a new
	// volume with Share) or ShareReadWrite; "" without Share, and for a
	// volume recorded before share-mode existed (read-write, as then).
	ShareMode ShareMode
	// Replication is how the volume reaches the other nodes; "" means the
	// store's default (ReplicationSnapshots where it can, else files).
	Replication Replication
}

// ShareMode is what a volume's share= devices may do with it.
type ShareMode string

const (
	// ShareEncrypted: the devices hold the volume encrypted (Syncthing's
	// untrusted devices, with the folder as "Receive Encrypted" on them):
	// they can neither read it nor change it on the cluster's nodes; a
	// backup any member can restore from.
	ShareEncrypted ShareMode = "encrypted"
	// ShareReadWrite: the devices hold the files in the clear and their
	// changes and deletions reach every replica, as a member's do.
	ShareReadWrite ShareMode = "readwrite"
)

// Replication is how a volume's data reaches the other nodes.
type Replication string

const (
	// ReplicationSnapshots ships crash-consistent generations (btrfs
	// snapshots) from the one node writing the volume: what databases need.
	ReplicationSnapshots Replication = "snapshots"
	// ReplicationFiles syncs file by file (Syncthing), every node may write
	// (conflicting writes become conflict copies); for static files shared
	// by several replicas, and for share= with plain Syncthing devices.
	ReplicationFiles Replication = "files"
)

// MaxCallWait bounds how long a Create, Mount, Unmount or Remove may wait
// on peers or the sync engine: Docker gives a plugin call 30 s, and an
// answer must reach it before that.
const MaxCallWait = 25 * time.Second

// optionHelp names every valid option with its form; errors quote it so a
// user sees at once what is accepted.
var optionHelp = map[string]string{
	"uid":           "uid=<0-4294967294>",
	"gid":           "gid=<0-4294967294>",
	"mode":          "mode=<octal, e.g. 0750>",
	"remove":        "remove=local|everywhere",
	"mount-timeout": "mount-timeout=<duration, e.g. 15s; at most 25s>",
	"share":         "share=<syncthing device ID>[@host:port][,…]",
	"share-mode":    "share-mode=encrypted|readwrite",
	"replication":   "replication=snapshots|files",
}

// ValidOptions is the sorted list of option forms, for error messages and docs.
func ValidOptions() string {
	keys := make([]string, 0, len(optionHelp))
	for k := range optionHelp {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	forms := make([]string, len(keys))
	for i, k := range keys {
		forms[i] = optionHelp[k]
	}
	return strings.Join(forms, ", ")
}

// deviceID is a Syncthing device ID: 56 base32 characters, grouped by 7
// with dashes (the canonical form) or not.
const deviceID = `[A-Z2-7]{7}(-?[A-Z2-7]{7}){7}`

var (
	deviceIDOnlyRE = regexp.MustCompile(`^` + deviceID + `$`)
	// deviceIDRE is a share entry: a device ID, optionally followed by
	// @host:port, an address to dial it at.
	deviceIDRE = regexp.MustCompile(`^` + deviceID + `(@[A-Za-z0-9.:\[\]_-]+)?$`)
)

// IsDeviceID reports whether id is a Syncthing device ID in upper case.
func IsDeviceID(id string) bool { return deviceIDOnlyRE.MatchString(id) }

// errLongMountTimeout marks a mount-timeout beyond MaxCallWait, which
// older releases accepted (up to legacyMaxMountTimeout).
var errLongMountTimeout = errors.New("mount-timeout too long")

const legacyMaxMountTimeout = 10 * time.Minute

// ParseOptions validates raw `-o` options. Unknown keys and malformed values
// are errors that name the valid options; nothing is half-applied.
func ParseOptions(raw map[string]string) (VolumeOptions, error) { return parseOptions(raw, false) }

// parseRecorded parses options an older release may have recorded (in a
// volume's record or the cluster's registry): a mount-timeout it accepted
// beyond MaxCallWait is read as MaxCallWait, the most a Mount waits.
func parseRecorded(raw map[string]string) (VolumeOptions, error) { return parseOptions(raw, true) }

func parseOptions(raw map[string]string, lenient bool) (VolumeOptions, error) {
	o := VolumeOptions{UID: -1, GID: -1, Remove: RemoveLocal}
	bad := func(k, v, why string) error {
		return fmt.Errorf("%w: %s=%q %s; valid options: %s", ErrInvalidOption, k, v, why, ValidOptions())
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic: the first bad key in order is reported
	for _, k := range keys {
		v := strings.TrimSpace(raw[k])
		switch k {
		case "uid", "gid":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n == 1<<32-1 {
				return o, bad(k, v, "is not a numeric id")
			}
			if k == "uid" {
				o.UID = int(n)
			} else {
				o.GID = int(n)
			}
		case "mode":
			n, err := strconv.ParseUint(v, 8, 32)
			if err != nil || n > 0o7777 || n == 0 {
				return o, bad(k, v, "is not an octal permission between 1 and 7777")
			}
			o.Mode = os.FileMode(n & 0o777)
			if n&0o1000 != 0 {
				o.Mode |= os.ModeSticky
			}
			if n&0o2000 != 0 {
				o.Mode |= os.ModeSetgid
			}
			if n&0o4000 != 0 {
				o.Mode |= os.ModeSetuid
			}
		case "remove":
			switch RemoveMode(v) {
			case RemoveLocal, RemoveEverywhere:
				o.Remove = RemoveMode(v)
			default:
				return o, bad(k, v, "must be local or everywhere")
			}
		case "mount-timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return o, bad(k, v, "is not a positive duration (e.g. 15s)")
			}
			if d > MaxCallWait {
				if !lenient || d > legacyMaxMountTimeout {
					return o, fmt.Errorf("%w: %w: mount-timeout=%q is longer than %s: Docker gives up on a Mount after 30s, and a Mount it gave up on must not go on; use at most %s (Swarm retries a Mount that failed); valid options: %s",
						ErrInvalidOption, errLongMountTimeout, v, MaxCallWait, MaxCallWait, ValidOptions())
				}
				d = MaxCallWait // recorded by an older release: what is used anyway
			}
			o.MountTimeout = d
		case "share":
			for _, id := range strings.Split(v, ",") {
				id = strings.TrimSpace(id)
				if at := strings.IndexByte(id, '@'); at >= 0 {
					id = strings.ToUpper(id[:at]) + id[at:]
				} else {
					id = strings.ToUpper(id)
				}
				if !deviceIDRE.MatchString(id) {
					return o, bad(k, v, "is not a comma-separated list of Syncthing device IDs")
				}
				o.Share = append(o.Share, id)
			}
		case "share-mode":
			switch ShareMode(v) {
			case ShareEncrypted, ShareReadWrite:
				o.ShareMode = ShareMode(v)
			default:
				return o, bad(k, v, "must be encrypted or readwrite")
			}
		case "replication":
			switch Replication(v) {
			case ReplicationSnapshots, ReplicationFiles:
				o.Replication = Replication(v)
			default:
				return o, bad(k, v, "must be snapshots or files")
			}
		default:
			return o, fmt.Errorf("%w: unknown option %q; valid options: %s", ErrInvalidOption, k, ValidOptions())
		}
	}
	switch {
	case o.ShareMode != "" && len(o.Share) == 0:
		return o, fmt.Errorf("%w: share-mode=%s without share=: name the devices to share with; valid options: %s", ErrInvalidOption, o.ShareMode, ValidOptions())
	case len(o.Share) > 0 && o.ShareMode == "" && !lenient:
		o.ShareMode = ShareEncrypted
	case len(o.Share) > 0 && o.ShareMode == "":
		o.ShareMode = ShareReadWrite // recorded before share-mode existed
	}
	if o.Replication == ReplicationSnapshots && len(o.Share) > 0 {
		return o, fmt.Errorf("%w: share= needs replication=files (plain Syncthing devices sync file by file); valid options: %s", ErrInvalidOption, ValidOptions())
	}
	return o, nil
}

// Raw renders the options back to the `-o` form, so that a volume's
// options round-trip through its record and `docker volume inspect`.
func (o VolumeOptions) Raw() map[string]string {
	m := map[string]string{}
	if o.UID >= 0 {
		m["uid"] = strconv.Itoa(o.UID)
	}
	if o.GID >= 0 {
		m["gid"] = strconv.Itoa(o.GID)
	}
	if o.Mode != 0 {
		m["mode"] = fmt.Sprintf("%04o", unixMode(o.Mode))
	}
	if o.Remove != "" && o.Remove != RemoveLocal {
		m["remove"] = string(o.Remove)
	}
	if o.MountTimeout > 0 {
		m["mount-timeout"] = o.MountTimeout.String()
	}
	if len(o.Share) > 0 {
		m["share"] = strings.Join(o.Share, ",")
	}
	if o.ShareMode != "" {
		m["share-mode"] = string(o.ShareMode)
	}
	if o.Replication != "" {
		m["replication"] = string(o.Replication)
	}
	return m
}

// unixMode converts Go's FileMode bits back to the chmod(2) number.
func unixMode(m os.FileMode) uint32 {
	n := uint32(m.Perm())
	if m&os.ModeSticky != 0 {
		n |= 0o1000
	}
	if m&os.ModeSetgid != 0 {
		n |= 0o2000
	}
	if m&os.ModeSetuid != 0 {
		n |= 0o4000
	}
	return n
}
