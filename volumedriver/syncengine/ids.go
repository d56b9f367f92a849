package syncengine

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/syncthing/syncthing/lib/protocol"
)

// RegistryFolderID is the Syncthing folder, shared with every verified
// member, that holds the cluster's volume and member records.
const RegistryFolderID = "sv-registry"

// volumeFolderPrefix starts every volume's folder ID; folders with this
// prefix are owned by the engine.
const volumeFolderPrefix = "sv-"

// FolderID returns the Syncthing folder ID of the volume called name:
// "sv-" followed by the first 20 characters of the lower-case, unpadded
// base32 encoding of sha256(name). It is the same on every node, so a
// plain Syncthing device can share the folder by computing it, and it never
// collides with RegistryFolderID.
func FolderID(name string) string {
	sum := sha256.Sum256([]byte(name))
	enc := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])
	return volumeFolderPrefix + strings.ToLower(enc[:20])
}

// proofSep separates a device label from its membership proof in the
// device name a member sends in its BEP Hello.
const proofSep = "#"

// memberProof is HMAC-SHA256(clusterKey, domain || deviceID || label). The
// device ID binds the proof to the device's TLS certificate (the name only
// travels inside that TLS session), and the label binds the advertised
// port, so a proof copied from another device or label does not verify.
func memberProof(key []byte, id protocol.DeviceID, label string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("syncvol/member/v1\x00"))
	mac.Write(id[:])
	mac.Write([]byte{0})
	mac.Write([]byte(label))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// sharePassword is the password a volume's data is encrypted with for its
// untrusted share= devices: HMAC-SHA256(clusterKey, domain || name), the
// same on every member, so each member sends the device the same
// encrypted files and any member can read them back from it.
func sharePassword(key []byte, volume string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("syncvol/share/v1\x00"))
	mac.Write([]byte(volume))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// memberName is the device name a member announces: "<label>#<proof>",
// where label is "<device name>@<listen port>".
func memberName(key []byte, id protocol.DeviceID, label string) string {
	return label + proofSep + memberProof(key, id, label)
}

// memberLabel builds the label part of a member name.
func memberLabel(deviceName string, port int) string {
	deviceName = strings.NewReplacer(proofSep, "_", "@", "_").Replace(deviceName)
	return fmt.Sprintf("%s@%d", deviceName, port)
}

// verifyMemberName reports whether name carries a valid membership proof
// for device id under key. On success it also returns the listen port the
// device announced (0 if none).
func verifyMemberName(key []byte, id protocol.DeviceID, name string) (port int, ok bool) {
	i := strings.LastIndex(name, proofSep)
	if i < 0 {
		return 0, false
	}
	label, proof := name[:i], name[i+len(proofSep):]
	want := memberProof(key, id, label)
	if !hmac.Equal([]byte(proof), []byte(want)) {
		return 0, false
	}
	if j := strings.LastIndex(label, "@"); j >= 0 {
		if p, err := strconv.Atoi(label[j+1:]); err == nil && p > 0 && p < 65536 {
			port = p
		}
	}
	return port, true
}

// verifyName is verifyMemberName under any cluster key this node accepts.
func (e *Engine) verifyName(id protocol.DeviceID, name string) (port int, ok bool) {
	for _, k := range e.keys {
		if port, ok = verifyMemberName(k, id, name); ok {
			return port, true
		}
	}
	return 0, false
}

// displayName strips the proof from a member name for logs and status.
func displayName(name string) string {
	if i := strings.LastIndex(name, proofSep); i >= 0 {
		return name[:i]
	}
	return name
}
