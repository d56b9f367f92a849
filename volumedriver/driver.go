// Package volumedriver is syncvol's plugin glue: it turns Docker's
// VolumeDriver requests into calls on the store (package store) and store
// results and errors into Docker's answers. It holds no state of its own,
// so what happens to a volume can be read in one place: package store.
package volumedriver

import (
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/volumedriver/store"
)

// Store is what the glue needs of package store; *store.Store is the real
// one, tests use a fake that counts calls.
type Store interface {
	Create(name string, opts map[string]string) error
	Remove(name string) error
	Mount(name, id string) (string, error)
	Unmount(name, id string) error
	Path(name string) (string, error)
	Get(name string) (store.Volume, error)
	List() []store.Volume
}

var _ Store = (*store.Store)(nil)

// Driver implements volume.Driver on a Store.
type Driver struct {
	store Store
	log   *logrus.Entry
}

var _ volume.Driver = (*Driver)(nil)

// NewDriver returns the glue for s. log receives one line per failed call;
// nil means logrus' standard logger.
func NewDriver(s Store, log *logrus.Entry) *Driver {
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	return &Driver{store: s, log: log}
}

// fail logs a failed call once, here, and hands the error to the helper,
// which turns it into Docker's {"Err": …}.
func (d *Driver) fail(call, name string, err error) error {
	d.log.WithFields(logrus.Fields{"call": call, "volume": name}).WithError(err).Warn("request refused")
	return err
}

// Create makes the volume (idempotent).
func (d *Driver) Create(r *volume.CreateRequest) error {
	if err := d.store.Create(r.Name, r.Options); err != nil {
		return d.fail("Create", r.Name, err)
	}
	return nil
}

// List reports every volume this node or the cluster knows.
func (d *Driver) List() (*volume.ListResponse, error) {
	vols := d.store.List()
	out := &volume.ListResponse{Volumes: make([]*volume.Volume, 0, len(vols))}
	for _, v := range vols {
		out.Volumes = append(out.Volumes, toDocker(v, false))
	}
	return out, nil
}

// Get describes one volume, with its sync status.
func (d *Driver) Get(r *volume.GetRequest) (*volume.GetResponse, error) {
	v, err := d.store.Get(r.Name)
	if err != nil {
		return nil, err // Docker probes with Get before Create: not worth a log line
	}
	return &volume.GetResponse{Volume: toDocker(v, true)}, nil
}

// Remove drops this node's replica.
func (d *Driver) Remove(r *volume.RemoveRequest) error {
	if err := d.store.Remove(r.Name); err != nil {
		return d.fail("Remove", r.Name, err)
	}
	return nil
}

// Path returns the mount point while mounted.
func (d *Driver) Path(r *volume.PathRequest) (*volume.PathResponse, error) {
	p, err := d.store.Path(r.Name)
	if err != nil {
		return nil, d.fail("Path", r.Name, err)
	}
	return &volume.PathResponse{Mountpoint: p}, nil
}

// Mount adds a user and returns the mount point.
func (d *Driver) Mount(r *volume.MountRequest) (*volume.MountResponse, error) {
	p, err := d.store.Mount(r.Name, r.ID)
	if err != nil {
		return nil, d.fail("Mount", r.Name, err)
	}
	return &volume.MountResponse{Mountpoint: p}, nil
}

// Unmount removes a user.
func (d *Driver) Unmount(r *volume.UnmountRequest) error {
	if err := d.store.Unmount(r.Name, r.ID); err != nil {
		return d.fail("Unmount", r.Name, err)
	}
	return nil
}

// Capabilities says volumes are cluster-wide: the same name means the same
// data on every node.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "global"}}
}

func toDocker(v store.Volume, withStatus bool) *volume.Volume {
	out := &volume.Volume{Name: v.Name, Mountpoint: v.Mountpoint}
	if !v.CreatedAt.IsZero() {
		out.CreatedAt = v.CreatedAt.Format(time.RFC3339)
	}
	if withStatus {
		st := make(map[string]interface{}, len(v.Status)+1)
		for k, s := range v.Status {
			st[k] = s
		}
		if len(v.Options) > 0 {
			st["options"] = v.Options
		}
		out.Status = st
	}
	return out
}
