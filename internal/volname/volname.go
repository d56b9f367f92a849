// Package volname holds the one rule for syncvol's volume names, shared
// by the plugin glue, the store and the replicators: Docker's own
// volume-name pattern (daemon/names) with a length bound, so that no name
// can reach outside the state directory it becomes a directory of.
package volname

import (
	"errors"
	"fmt"
	"regexp"
)

// ErrInvalid marks a name that breaks the rule.
var ErrInvalid = errors.New("invalid volume name")

// MaxLen bounds a name (it becomes a directory name).
const MaxLen = 128

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Validate returns nil for a usable name, else an error wrapping
// ErrInvalid that says what to change.
func Validate(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: the name is empty", ErrInvalid)
	case len(name) > MaxLen:
		return fmt.Errorf("%w: %q is %d characters long, the limit is %d", ErrInvalid, name[:16]+"…", len(name), MaxLen)
	case !nameRE.MatchString(name):
		return fmt.Errorf("%w: %q: use letters, digits, '_', '.' and '-', starting with a letter or digit", ErrInvalid, name)
	}
	return nil
}
