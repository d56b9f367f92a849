package mesh

import (
	"bytes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/flynn/noise"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/homeswarm/homeswarm/netdriver/wire"
)

// The handshake is Noise_XXpsk0_25519_ChaChaPoly_BLAKE2s (flynn/noise):
//
//	-> psk, e                      (type 1, init)
//	<- e, ee, s, es  + NodeInfo    (type 2, response)
//	-> s, se         + NodeInfo    (type 3, final)
//
// XX because a node knows its bootstrap peers only by address, never by
// key: both static keys travel encrypted. psk0 mixes the cluster key (via
// Argon2id, see derivePSK) in before the first message, so message 1 already carries a tag
// that only cluster members can produce: a responder rejects outsiders after
// one hash and one AEAD open, before any Diffie-Hellman. Message 1's sealed
// payload is a TAI64N timestamp: copies outside the clock window, or seen
// before within it (initCache), are dropped at the same cost, so a captured
// message 1 cannot be replayed to make us work or keep state. Both sides use
// fresh ephemeral keys, so recorded traffic stays secret even if static keys
// or the cluster key leak later (forward secrecy). After the third message
// each side holds two ChaCha20-Poly1305 keys, used by the transport below
// with explicit 64-bit counters instead of Noise's implicit nonces, so that
// reordered or lost UDP packets do not break the session.
var (
	cipherSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)
	// v2: message 1 carries a timestamp (v1 nodes and v2 nodes refuse
	// each other's handshakes: upgrade every node).
	prologue = []byte("homeswarm meshnet v2")
)

// The cluster key is stretched into the Noise PSK with Argon2id (RFC 9106's
// second recommended setting: 3 passes over 64 MiB), so that guessing a
// weak MESH_KEY offline from one captured handshake costs 64 MiB and a
// fifth of a second per guess instead of one hash. It runs once per key and
// process (New is called once; tests share the result).
const (
	pskTime    = 3
	pskMemory  = 64 << 10 // KiB
	pskThreads = 2
)

var pskSalt = []byte("homeswarm meshnet v2 psk")

var pskCache sync.Map // sha256(cluster key) -> []byte

// derivePSK turns the cluster secret of any length into the Noise PSK.
func derivePSK(clusterKey []byte) ([]byte, error) {
	if len(clusterKey) == 0 {
		return nil, ErrNoClusterKey
	}
	id := sha256.Sum256(clusterKey)
	if psk, ok := pskCache.Load(id); ok {
		return psk.([]byte), nil
	}
	psk := argon2.IDKey(clusterKey, pskSalt, pskTime, pskMemory, pskThreads, 32)
	pskCache.Store(id, psk)
	debug.FreeOSMemory() // give the 64 MiB back now, not in minutes
	return psk, nil
}

// newNoise returns a handshake state whose ephemeral key is drawn from
// eseed: the same seed gives the same messages, so a state spoiled by a
// message that failed to authenticate can be rebuilt (see handshake.rebuild).
// psk is the stretched cluster key the handshake is bound to: m.psks[0]
// for an initiator, whichever one message 1 authenticated under for a
// responder.
func (m *Mesh) newNoise(initiator bool, eseed *[32]byte, psk []byte) (*noise.HandshakeState, error) {
	return noise.NewHandshakeState(noise.Config{
		Random:                bytes.NewReader(eseed[:]),
		CipherSuite:           cipherSuite,
		Pattern:               noise.HandshakeXX,
		Initiator:             initiator,
		Prologue:              prologue,
		StaticKeypair:         m.static,
		PresharedKey:          psk,
		PresharedKeyPlacement: 0,
	})
}

// keypair is one direction-pair of transport keys: a session.
type keypair struct {
	send, recv cipher.AEAD
	sendNonce  atomic.Uint64
	local      uint32 // our index: peers put it in packets to us
	remote     uint32 // their index: we put it in packets to them
	created    int64
	deadline   int64 // created + RejectAfter
	initiator  bool
	confirmed  atomic.Bool  // we have received a packet on it
	lastRx     atomic.Int64 // when we last received on it
	peer       *peer

	replayMu sync.Mutex
	replay   replayFilter
}

func newKeypair(send, recv *noise.CipherState, now, rejectAfter int64) (*keypair, error) {
	sk, rk := send.UnsafeKey(), recv.UnsafeKey()
	s, err := chacha20poly1305.New(sk[:])
	if err != nil {
		return nil, fmt.Errorf("send cipher: %w", err)
	}
	r, err := chacha20poly1305.New(rk[:])
	if err != nil {
		return nil, fmt.Errorf("recv cipher: %w", err)
	}
	return &keypair{send: s, recv: r, created: now, deadline: now + rejectAfter}, nil
}

func (kp *keypair) expired(now int64) bool {
	return now >= kp.deadline || kp.sendNonce.Load() >= rejectAfterMessages
}

// scratch is per-goroutine state for the crypto so the hot path does not
// allocate: the nonce must not live on the stack of a call through an
// interface, or it escapes.
type scratch struct {
	nonce [chacha20poly1305.NonceSize]byte
}

// seal encrypts buf[HeaderLen:HeaderLen+n] in place, writing the transport
// header in front and the tag behind (cap(buf) must allow it). It returns
// the packet, or nil if the session's counter is exhausted.
func (kp *keypair) seal(s *scratch, typ byte, buf []byte, n int) []byte {
	ctr := kp.sendNonce.Add(1) - 1
	if ctr >= rejectAfterMessages {
		return nil
	}
	wire.TransportHeader{Type: typ, Receiver: kp.remote, Counter: ctr}.Put(buf)
	binary.LittleEndian.PutUint64(s.nonce[4:], ctr)
	kp.send.Seal(buf[wire.HeaderLen:wire.HeaderLen], s.nonce[:], buf[wire.HeaderLen:wire.HeaderLen+n], buf[:wire.HeaderLen])
	return buf[:wire.HeaderLen+n+wire.TagLen]
}

// open authenticates and decrypts pkt in place and returns the plaintext.
// The caller has checked the replay window and must record the counter.
func (kp *keypair) open(s *scratch, pkt []byte, ctr uint64) ([]byte, error) {
	binary.LittleEndian.PutUint64(s.nonce[4:], ctr)
	return kp.recv.Open(pkt[wire.HeaderLen:wire.HeaderLen], s.nonce[:], pkt[wire.HeaderLen:], pkt[:wire.HeaderLen])
}

func (kp *keypair) replayCheck(ctr uint64) bool {
	kp.replayMu.Lock()
	ok := kp.replay.check(ctr)
	kp.replayMu.Unlock()
	return ok
}

func (kp *keypair) replayAccept(ctr uint64) bool {
	kp.replayMu.Lock()
	ok := kp.replay.accept(ctr)
	kp.replayMu.Unlock()
	return ok
}

// handshake is a handshake in progress, registered under its local index.
// Its Noise state is kept until a message authenticates: a forged message
// 2 or 3 that names its index only spoils the state (flynn/noise leaves a
// failed read half-applied), which is then rebuilt from the inputs kept
// here before the next message is read.
type handshake struct {
	state     *noise.HandshakeState
	spoiled   bool // state must be rebuilt before the next read
	local     uint32
	remote    uint32 // responder only: the initiator's index
	initiator bool
	path      path
	created   int64
	peer      *peer // initiator: the peer we meant to reach, if known
	seed      *seed // initiator: the bootstrap address we dialled, if any

	eseed [32]byte // our ephemeral key's seed
	psk   []byte   // the stretched cluster key it is bound to (see newNoise)
	msg1  []byte   // initiator: message 1's payload; responder: message 1's Noise bytes
	sent  []byte   // responder: the payload of the message 2 we sent
}

// rebuild recreates h's Noise state as it was after the last message we
// sent. For a responder this costs the two Diffie-Hellman of message 2.
func (m *Mesh) rebuild(h *handshake) error {
	st, err := m.newNoise(h.initiator, &h.eseed, h.psk)
	if err != nil {
		return err
	}
	if h.initiator {
		_, _, _, err = st.WriteMessage(nil, h.msg1)
	} else {
		if _, _, _, err = st.ReadMessage(nil, h.msg1); err == nil {
			_, _, _, err = st.WriteMessage(nil, h.sent)
		}
	}
	if err != nil {
		return fmt.Errorf("rebuild handshake: %w", err)
	}
	h.state, h.spoiled = st, false
	return nil
}

// indexEntry is what a session index names.
type indexEntry struct {
	hs *handshake
	kp *keypair
}
