package volname

import (
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"db", true}, {"my_vol.1-x", true}, {strings.Repeat("a", MaxLen), true},
		{"", false}, {strings.Repeat("a", MaxLen+1), false}, {".", false}, {"..", false},
		{"a/b", false}, {"-x", false}, {".hidden", false}, {"a b", false}, {"a\x00", false},
	} {
		err := Validate(tc.name)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("Validate(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
