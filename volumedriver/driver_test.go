package volumedriver

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/internal/plugintest"
	"github.com/homeswarm/homeswarm/volumedriver/store"
)

// fakeStore counts calls and answers from a map.
type fakeStore struct {
	mu    sync.Mutex
	calls map[string]int
	vols  map[string]store.Volume
}

func (f *fakeStore) count(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[call]++
}

func (f *fakeStore) Create(name string, opts map[string]string) error {
	f.count("Create")
	if err := store.ValidateName(name); err != nil {
		return err
	}
	if _, err := store.ParseOptions(opts); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vols[name] = store.Volume{Name: name, Local: true, CreatedAt: time.Unix(1700000000, 0).UTC(), Options: opts,
		Status: map[string]string{"sync": "in sync"}}
	return nil
}

func (f *fakeStore) Remove(name string) error {
	f.count("Remove")
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.vols[name]; !ok {
		return fmt.Errorf("%w: %s", store.ErrNotFound, name)
	}
	delete(f.vols, name)
	return nil
}

func (f *fakeStore) Mount(name, id string) (string, error) {
	f.count("Mount")
	return "/mnt/volumes/" + name, nil
}
func (f *fakeStore) Unmount(name, id string) error { f.count("Unmount"); return nil }
func (f *fakeStore) Path(name string) (string, error) {
	f.count("Path")
	return "/mnt/volumes/" + name, nil
}

func (f *fakeStore) Get(name string) (store.Volume, error) {
	f.count("Get")
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[name]
	if !ok {
		return v, fmt.Errorf("%w: %s", store.ErrNotFound, name)
	}
	return v, nil
}

func (f *fakeStore) List() []store.Volume {
	f.count("List")
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []store.Volume
	for _, v := range f.vols {
		out = append(out, v)
	}
	return out
}

// serve starts the real helper handler on a unix socket and returns an HTTP
// client that talks to it, as dockerd does.
func serve(t *testing.T, e Store) *http.Client {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	return plugintest.Serve(t, volume.NewHandler(NewDriver(e, logrus.NewEntry(log))).Serve)
}

func call(t *testing.T, c *http.Client, path, body string) (int, map[string]any) {
	t.Helper()
	return plugintest.Call(t, c, "VolumeDriver."+path, body)
}

func TestDriverOverSocket(t *testing.T) {
	t.Parallel()
	e := &fakeStore{calls: map[string]int{}, vols: map[string]store.Volume{}}
	c := serve(t, e)

	code, out := call(t, c, "Capabilities", `{}`)
	if code != 200 || out["Capabilities"].(map[string]any)["Scope"] != "global" {
		t.Fatalf("Capabilities = %d %v", code, out)
	}
	for _, tc := range []struct {
		name, path, body string
		wantCode         int
		wantErr          string // substring of Err; "" means no error
	}{
		{"create", "Create", `{"Name":"web","Opts":{"mode":"0750"}}`, 200, ""},
		{"create again", "Create", `{"Name":"web","Opts":{"mode":"0750"}}`, 200, ""},
		{"bad option", "Create", `{"Name":"x","Opts":{"sizee":"1"}}`, 500, "valid options: gid="},
		{"bad name", "Create", `{"Name":"../../etc"}`, 500, "invalid volume name"},
		{"empty name", "Create", `{"Name":""}`, 500, "empty"},
		{"get", "Get", `{"Name":"web"}`, 200, ""},
		{"get missing", "Get", `{"Name":"nope"}`, 500, "no such volume"},
		{"mount", "Mount", `{"Name":"web","ID":"abc"}`, 200, ""},
		{"path", "Path", `{"Name":"web"}`, 200, ""},
		{"unmount", "Unmount", `{"Name":"web","ID":"abc"}`, 200, ""},
		{"list", "List", `{}`, 200, ""},
		{"remove", "Remove", `{"Name":"web"}`, 200, ""},
		{"remove missing", "Remove", `{"Name":"web"}`, 500, "no such volume"},
	} {
		code, out := call(t, c, tc.path, tc.body)
		errStr, _ := out["Err"].(string)
		if code != tc.wantCode || (tc.wantErr == "") != (errStr == "") || !strings.Contains(errStr, tc.wantErr) {
			t.Errorf("%s: %d %v, want %d with Err containing %q", tc.name, code, out, tc.wantCode, tc.wantErr)
		}
		switch tc.name {
		case "mount", "path":
			if out["Mountpoint"] != "/mnt/volumes/web" {
				t.Errorf("%s: Mountpoint = %v", tc.name, out["Mountpoint"])
			}
		case "get":
			v := out["Volume"].(map[string]any)
			st := v["Status"].(map[string]any)
			if v["Name"] != "web" || v["CreatedAt"] != "2023-11-14T22:13:20Z" || st["sync"] != "in sync" {
				t.Errorf("get: %v", v)
			}
		case "list":
			if vs := out["Volumes"].([]any); len(vs) != 1 {
				t.Errorf("list: %v", out)
			}
		}
	}
}

// TestMalformedBodiesLoseNothing: broken JSON is refused with 400 before
// the engine sees it.
func TestMalformedBodiesLoseNothing(t *testing.T) {
	t.Parallel()
	e := &fakeStore{calls: map[string]int{}, vols: map[string]store.Volume{}}
	c := serve(t, e)
	for _, p := range []string{"Create", "Remove", "Mount", "Unmount", "Path", "Get"} {
		for _, body := range []string{``, `{`, `[]`, `{"Name":5}`, "\x00\xff"} {
			code, out := call(t, c, p, body)
			if code != http.StatusBadRequest {
				t.Errorf("%s with %q: %d %v, want 400", p, body, code, out)
			}
		}
	}
	if len(e.calls) != 0 {
		t.Fatalf("malformed requests reached the engine: %v", e.calls)
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	key := "9f86d081884c7d659a2feaa0c55ad015"
	for _, tc := range []struct {
		name    string
		env     func(string) string
		wantErr string
		check   func(Config) bool
	}{
		{"defaults", env(), "", func(c Config) bool {
			return c.StateDir == "/state" && c.ListenPort == 22000 && c.MountTimeout == 20*time.Second && c.ClusterKey == ""
		}},
		{"peers", env("CLUSTER_KEY", key, "PEERS", "vps.example.org, 10.0.0.2:22001 [fd00::1]:23 fd00::2"), "", func(c Config) bool {
			return strings.Join(c.Peers, " ") == "vps.example.org:22000 10.0.0.2:22001 [fd00::1]:23 [fd00::2]:22000"
		}},
		{"short key", env("CLUSTER_KEY", "short"), "CLUSTER_KEY must be at least", nil},
		{"weak key", env("CLUSTER_KEY", "0123456789abcdef0123"), "CLUSTER_KEY is too easy to guess", nil},
		{"rotation", env("CLUSTER_KEY", key, "CLUSTER_KEY_ACCEPT", "q3Zx/7Kp0Lw+9aTm-rotated"), "", func(c Config) bool { return c.AcceptClusterKey == "q3Zx/7Kp0Lw+9aTm-rotated" }},
		{"weak accepted key", env("CLUSTER_KEY", key, "CLUSTER_KEY_ACCEPT", "passwordpassword"), "CLUSTER_KEY_ACCEPT is too easy", nil},
		{"peers without key", env("PEERS", "a:1"), "CLUSTER_KEY is empty", nil},
		{"bad peer port", env("CLUSTER_KEY", key, "PEERS", "a:99999"), "bad port", nil},
		{"bad peer host", env("CLUSTER_KEY", key, "PEERS", "a_b!:1"), "not host[:port]", nil},
		{"bad port", env("LISTEN_PORT", "http"), "LISTEN_PORT", nil},
		{"bad timeout", env("MOUNT_TIMEOUT", "5m"), "MOUNT_TIMEOUT", nil},
		{"bad level", env("LOG_LEVEL", "loud"), "LOG_LEVEL", nil},
		{"bad removed node", env("REMOVED_NODES", "home4"), "REMOVED_NODES", nil},
		{"removed nodes", env("REMOVED_NODES", "mfzwi3d-bonsgyc-yltmrwg-c43enr5-qxgzdmm-fzwi3dp-bonsgyy-ltmrwad"), "", func(c Config) bool {
			return len(c.Forget) == 1 && c.Forget[0] == "MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZDMM-FZWI3DP-BONSGYY-LTMRWAD"
		}},
		{"timeouts", env("MOUNT_TIMEOUT", "25s", "FLUSH_TIMEOUT", "5s", "LOG_LEVEL", "debug"), "", func(c Config) bool {
			return c.MountTimeout == 25*time.Second && c.FlushTimeout == 5*time.Second && c.LogLevel == logrus.DebugLevel
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ConfigFromEnv(tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), key) {
					t.Fatal("error reveals the cluster key")
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("ConfigFromEnv = %+v, %v", c, err)
			}
		})
	}
}

func TestNewDriverNilLog(t *testing.T) {
	t.Parallel()
	if d := NewDriver(nil, nil); d.log == nil || d.log.Logger != logrus.StandardLogger() {
		t.Fatalf("NewDriver(_, nil) logs to %v, want logrus' standard logger", d.log)
	}
}
