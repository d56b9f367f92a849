package syncengine

import (
	"bufio"
	"io"
	"regexp"
)

// proofPattern matches a membership proof where it follows a device label
// (see memberName): '#' and 43 characters of unpadded base64url.
var proofPattern = regexp.MustCompile(`#[A-Za-z0-9_-]{43}`)

// RedactProofs replaces every membership proof in b, so that a log line
// naming a member's device ("…named "home1@22000#…"") cannot be used to
// guess the cluster key offline.
func RedactProofs(b []byte) []byte {
	return proofPattern.ReplaceAll(b, []byte("#<proof>"))
}

// copyRedacted copies r to w line by line through RedactProofs until r
// ends. A failing w does not stop it: the writer side must never block.
func copyRedacted(w io.Writer, r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			_, _ = w.Write(RedactProofs(line))
		}
		if err != nil {
			return
		}
	}
}
