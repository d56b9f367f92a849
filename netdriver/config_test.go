package netdriver

import (
	"strings"
	"testing"
)

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	const key = "0123456789abcdef-secret"
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantErr string
		check   func(Config) bool
	}{
		{"minimal", map[string]string{"MESH_KEY": key, "MESH_ADDR": "10.254.0.1/24"}, "", func(c Config) bool {
			return c.Port == 3210 && c.Interface == "mesh0" && c.Addr.String() == "10.254.0.1/24" && len(c.Peers) == 0
		}},
		{"peers default port", map[string]string{"MESH_KEY": key, "MESH_ADDR": "10.254.0.2/24", "MESH_PORT": "4000", "MESH_PEERS": "vps.example.org,1.2.3.4:5"}, "", func(c Config) bool {
			return strings.Join(c.Peers, " ") == "vps.example.org:4000 1.2.3.4:5"
		}},
		{"no key", map[string]string{"MESH_ADDR": "10.254.0.1/24"}, "MESH_KEY must be set", nil},
		{"short key", map[string]string{"MESH_KEY": "abc", "MESH_ADDR": "10.254.0.1/24"}, "MESH_KEY", nil},
		{"repeated key", map[string]string{"MESH_KEY": "aaaaaaaaaaaaaaaaaaaaaaaa", "MESH_ADDR": "10.254.0.1/24"}, "MESH_KEY is too easy to guess", nil},
		{"doubled word", map[string]string{"MESH_KEY": "passwordpassword", "MESH_ADDR": "10.254.0.1/24"}, "MESH_KEY is too easy to guess", nil},
		{"repeated phrase", map[string]string{"MESH_KEY": "Password123!Password123!", "MESH_ADDR": "10.254.0.1/24"}, "MESH_KEY is too easy to guess", nil},
		{"64-bit hex key", map[string]string{"MESH_KEY": "0123456789abcdef", "MESH_ADDR": "10.254.0.1/24"}, "MESH_KEY is too easy to guess", nil},
		{"hex key", map[string]string{"MESH_KEY": "9f86d081884c7d659a2feaa0c55ad015", "MESH_ADDR": "10.254.0.1/24"}, "", func(c Config) bool { return true }},
		{"base64 key", map[string]string{"MESH_KEY": "q3Zx/7Kp0Lw+9aTm", "MESH_ADDR": "10.254.0.1/24"}, "", func(c Config) bool { return true }},
		{"no addr", map[string]string{"MESH_KEY": key}, "MESH_ADDR", nil},
		{"network addr", map[string]string{"MESH_KEY": key, "MESH_ADDR": "10.254.0.0/24"}, "MESH_ADDR", nil},
		{"host route", map[string]string{"MESH_KEY": key, "MESH_ADDR": "10.254.0.1/32"}, "MESH_ADDR", nil},
		{"ipv6", map[string]string{"MESH_KEY": key, "MESH_ADDR": "fd00::1/64"}, "MESH_ADDR", nil},
		{"bad port", map[string]string{"MESH_KEY": key, "MESH_ADDR": "10.254.0.1/24", "MESH_PORT": "0"}, "MESH_PORT", nil},
		{"bad peer", map[string]string{"MESH_KEY": key, "MESH_ADDR": "10.254.0.1/24", "MESH_PEERS": "a b:99999"}, "MESH_PEERS", nil},
		{"bad ifname", map[string]string{"MESH_KEY": key, "MESH_ADDR": "10.254.0.1/24", "MESH_IFNAME": "a/b"}, "MESH_IFNAME", nil},
		{"key rotation", map[string]string{"MESH_KEY": key, "MESH_ADDR": "10.254.0.1/24", "MESH_KEY_ACCEPT": "9f86d081884c7d659a2feaa0c55ad015"}, "", func(c Config) bool {
			return c.AcceptKey == "9f86d081884c7d659a2feaa0c55ad015"
		}},
		{"weak accepted key", map[string]string{"MESH_KEY": key, "MESH_ADDR": "10.254.0.1/24", "MESH_KEY_ACCEPT": "passwordpassword"}, "MESH_KEY_ACCEPT", nil},
		{"revoked", map[string]string{"MESH_KEY": key, "MESH_ADDR": "10.254.0.1/24", "MESH_REVOKED": "10.254.0.14, q3Zx/7Kp0Lw+9aTmq3Zx/7Kp0Lw+9aTmq3Zx/7Kp0Lw="}, "", func(c Config) bool {
			return len(c.RevokedAddrs) == 1 && c.RevokedAddrs[0].String() == "10.254.0.14" && len(c.RevokedKeys) == 1
		}},
		{"bad revoked", map[string]string{"MESH_KEY": key, "MESH_ADDR": "10.254.0.1/24", "MESH_REVOKED": "friend-pi"}, "MESH_REVOKED entry \"friend-pi\"", nil},
		{"bad mtu", map[string]string{"MESH_KEY": key, "MESH_ADDR": "10.254.0.1/24", "MESH_MTU": "100"}, "MESH_MTU", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ConfigFromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), tc.env["MESH_KEY"]) && tc.env["MESH_KEY"] != "" {
					t.Fatal("error reveals MESH_KEY")
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("ConfigFromEnv = %+v, %v", c, err)
			}
		})
	}
}
