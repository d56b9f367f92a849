//go:build e2e

package e2e

import (
	"encoding/binary"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/homeswarm/homeswarm/internal/netns"
	"github.com/homeswarm/homeswarm/netdriver/wire"
)

// TestMeshUnderFlood (issue 12, item 2): a stranger on the Internet floods
// the VPS's mesh port with 4-byte junk "from" the home NAT's address
// (~400 pps) and with replays of a real handshake message 1 from 110
// forged sources (40 each), while home nodes restart meshnet and must
// handshake again: they regain the VPS within seconds, and the VPS counts
// each kind of packet under its own reason.
func TestMeshUnderFlood(t *testing.T) {
	needMesh(t)
	const natAddr = "203.0.113.20"
	vps := netip.MustParseAddr(vpsAddr)

	// The stranger: a host of its own on the "internet" bridge.
	atk := prefix + "-attacker"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	exec.Command("ip", "netns", "del", atk).Run()
	run("ip", "netns", "add", atk)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", atk).Run() })
	run("ip", "link", "add", "atk0", "netns", atk, "type", "veth", "peer", "name", "atk-br", "netns", prefix+"-wan")
	run("ip", "-n", prefix+"-wan", "link", "set", "atk-br", "master", "br0", "up")
	run("ip", "-n", atk, "addr", "add", "203.0.113.66/24", "dev", "atk0")
	run("ip", "-n", atk, "link", "set", "atk0", "up")
	var fd int
	if err := netns.Do(netns.Path(atk), func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	send := func(src netip.AddrPort, payload []byte) {
		pkt := make([]byte, 28+len(payload))
		pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_UDP
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		s4, d4 := src.Addr().As4(), vps.As4()
		copy(pkt[12:16], s4[:])
		copy(pkt[16:20], d4[:])
		binary.BigEndian.PutUint16(pkt[20:], src.Port())
		binary.BigEndian.PutUint16(pkt[22:], 3210)
		binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(payload)))
		copy(pkt[28:], payload)
		_ = unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: d4})
	}

	// A real message 1: home2's, captured at the VPS while home2's meshnet
	// restarts.
	pcap := filepath.Join(t.TempDir(), "init.pcap")
	capture := exec.Command("ip", "netns", "exec", prefix+"-vps", "timeout", "30", "tcpdump", "-i", "wan0", "-c", "1", "-w", pcap,
		"udp dst port 3210 and src host "+natAddr+" and udp[8] = 1")
	if err := capture.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // tcpdump is listening
	mustDk(t, "home2", "plugin", "disable", "-f", meshnetDriver)
	mustDk(t, "home2", "plugin", "enable", meshnetDriver)
	if err := capture.Wait(); err != nil {
		t.Fatalf("capturing home2's handshake: %v", err)
	}
	init1 := udpPayload(t, pcap)
	if _, err := wire.ParseHandshakeInit(init1); err != nil {
		t.Fatalf("captured %d bytes, not a message 1: %v", len(init1), err)
	}
	eventually(t, 30*time.Second, "home2 back on the mesh", func() error { return meshPing("home2", "10.254.0.1") })

	before := readMeshStatus(t, "vps").Drops
	var junk, replays atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // ~400 pps of junk from the NAT's address, replays from 110 others
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		src := 0
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			send(netip.AddrPortFrom(netip.MustParseAddr(natAddr), uint16(1024+i%60000)), []byte{4, 0, 0, 0})
			send(netip.AddrPortFrom(netip.MustParseAddr(natAddr), uint16(2048+i%60000)), []byte{1, 0, 0, 0})
			junk.Add(2)
			if replays.Load() < 110*40 {
				a := netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + src%110)})
				send(netip.AddrPortFrom(a, 3210), init1)
				src++
				replays.Add(1)
			}
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()
	time.Sleep(2 * time.Second) // the flood is on
	// Home nodes lose their sessions and must handshake again, under the flood.
	start := time.Now()
	for _, n := range []string{"home2", "home3"} {
		mustDk(t, n, "plugin", "disable", "-f", meshnetDriver)
		mustDk(t, n, "plugin", "enable", meshnetDriver)
	}
	for _, n := range []string{"home2", "home3"} {
		eventually(t, 20*time.Second, n+" regains the VPS under the flood", func() error { return meshPing(n, "10.254.0.1") })
	}
	t.Logf("home2 and home3 back %v after their restarts, under the flood", time.Since(start).Round(time.Millisecond))
	for replays.Load() < 110*40 {
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	<-done
	time.Sleep(2500 * time.Millisecond) // status.json is rewritten every 2 s
	after := readMeshStatus(t, "vps").Drops
	delta := func(r string) uint64 { return after[r] - before[r] }
	t.Logf("sent %d junk, %d replays; VPS drops: malformed %d, handshake_replay %d, handshake_stale %d, handshake_rate %d, handshake_evicted %d",
		junk.Load(), replays.Load(), delta("malformed"), delta("handshake_replay"), delta("handshake_stale"), delta("handshake_rate"), delta("handshake_evicted"))
	if delta("malformed") < uint64(junk.Load())*9/10 {
		t.Errorf("junk counted as malformed: %d of %d", delta("malformed"), junk.Load())
	}
	if delta("handshake_replay") < uint64(replays.Load())*9/10 {
		t.Errorf("replays counted as handshake_replay: %d of %d", delta("handshake_replay"), replays.Load())
	}
	if delta("handshake_evicted") > 0 {
		t.Errorf("replays evicted %d pending handshakes", delta("handshake_evicted"))
	}
}

// udpPayload is the UDP payload of the one packet in a pcap file written
// by tcpdump from an Ethernet interface.
func udpPayload(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24+16+14+20+8 {
		t.Fatalf("pcap of %d bytes", len(b))
	}
	rec := b[24:]
	caplen := int(binary.LittleEndian.Uint32(rec[8:]))
	frame := rec[16:]
	if caplen > len(frame) {
		t.Fatalf("pcap record of %d bytes, %d present", caplen, len(frame))
	}
	ip := frame[14:caplen]
	ihl := int(ip[0]&0x0f) * 4
	return append([]byte(nil), ip[ihl+8:]...)
}
