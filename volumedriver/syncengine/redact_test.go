package syncengine

import (
	"bytes"
	"strings"
	"testing"

	"github.com/syncthing/syncthing/lib/protocol"
)

// TestRedactProofs: the line embedded Syncthing logs when a member
// connects carries the member's name with its proof; what reaches the log
// does not, and the rest of the line is kept.
func TestRedactProofs(t *testing.T) {
	t.Parallel()
	id := protocol.NewDeviceID([]byte("a certificate"))
	name := memberName([]byte(testKey), id, memberLabel("home1", 22000))
	proof := name[strings.LastIndex(name, proofSep)+1:]
	line := `INFO: Device ` + id.Short().String() + ` client is "syncthing v1.30.0" named "` + name + `" at 10.0.0.2:22000` + "\n"
	var out bytes.Buffer
	copyRedacted(&out, strings.NewReader(line+line))
	if strings.Contains(out.String(), proof) {
		t.Fatalf("proof logged: %s", out.String())
	}
	want := strings.Replace(line, name, "home1@22000#<proof>", 1)
	if out.String() != want+want {
		t.Fatalf("got %q, want %q twice", out.String(), want)
	}
}
