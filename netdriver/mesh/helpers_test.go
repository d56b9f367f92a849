package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/netdriver/conn/bindtest"
	"github.com/homeswarm/homeswarm/netdriver/tun/tuntest"
)

var testClusterKey = []byte("correct horse battery staple")

type node struct {
	t    testing.TB
	m    *Mesh
	tun  *tuntest.Device
	bind *bindtest.Bind
	ip   netip.Addr
}

// fastOptions shortens every timer so tests converge in milliseconds.
func fastOptions(o *Options) {
	o.KeepaliveInterval = 150 * time.Millisecond
	o.HandshakeTimeout = 100 * time.Millisecond
	o.GossipInterval = 150 * time.Millisecond
	o.ResolveInterval = 100 * time.Millisecond
	o.RekeyAfter = time.Minute
	o.HandshakeRate = 1000
}

func testLogger(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	if testing.Verbose() {
		l.SetLevel(logrus.DebugLevel)
	}
	l.Out = testWriter{t}
	return logrus.NewEntry(l)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(b, "\n")))
	return len(b), nil
}

func newNode(t testing.TB, b *bindtest.Bind, meshAddr string, peers []string, tweak ...func(*Options)) *node {
	t.Helper()
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	prefix := netip.MustParsePrefix(meshAddr)
	tn := tuntest.New("mesh-"+prefix.Addr().String(), DefaultMTU)
	o := Options{PrivateKey: k, ClusterKey: testClusterKey, Addr: prefix, Peers: peers, TUN: tn, Bind: b, Logger: testLogger(t)}
	fastOptions(&o)
	for _, f := range tweak {
		f(&o)
	}
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	runMesh(t, m)
	return &node{t: t, m: m, tun: tn, bind: b, ip: prefix.Addr()}
}

// runMesh runs m until the test ends; the cleanup closes it and checks
// that Run stopped cleanly.
func runMesh(t testing.TB, m *Mesh) {
	errc := make(chan error, 1)
	go func() { errc <- m.Run(context.Background()) }()
	t.Cleanup(func() {
		m.Close()
		if err := <-errc; err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("mesh Run: %v", err)
		}
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ping sends a packet from a to b through the mesh, resending until b's TUN
// emits it, and fails after d.
func ping(t testing.TB, a, b *node, d time.Duration) {
	t.Helper()
	if err := tryPing(a, b, d); err != nil {
		t.Fatalf("%v\nstatus of sender: %+v\nstatus of receiver: %+v", err, a.m.Status(), b.m.Status())
	}
}

var pingSeq struct {
	sync.Mutex
	n int
}

func tryPing(a, b *node, d time.Duration) error {
	pingSeq.Lock()
	pingSeq.n++
	payload := fmt.Appendf(nil, "ping %d %v->%v", pingSeq.n, a.ip, b.ip)
	pingSeq.Unlock()
	pkt := tuntest.Packet(a.ip, b.ip, payload)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	resend := time.NewTicker(50 * time.Millisecond)
	defer resend.Stop()
	a.tun.Inbound <- pkt
	for {
		select {
		case got := <-b.tun.Outbound:
			if bytes.Equal(got, pkt) {
				return nil
			}
		case <-resend.C:
			select {
			case a.tun.Inbound <- pkt:
			default:
			}
		case <-ctx.Done():
			return fmt.Errorf("ping %v -> %v: not delivered within %v", a.ip, b.ip, d)
		}
	}
}

func (n *node) peerStatus(k Key) (PeerStatus, bool) {
	for _, p := range n.m.Status().Peers {
		if p.PublicKey == k.String() {
			return p, true
		}
	}
	return PeerStatus{}, false
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
