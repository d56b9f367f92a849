// Package wire parses and marshals every packet meshnet puts on the UDP wire.
//
// It exists so that the one place that reads bytes from the network is small,
// free of crypto and state, and fuzzed on its own: the mesh only sees
// typed, length-checked values. Nothing here encrypts or decrypts; sealed
// fields are carried as opaque byte slices.
//
// Every packet starts with a one-byte type followed by three zero bytes:
//
//	type 1  handshake init      Noise XXpsk0 message 1 (initiator -> responder),
//	                            its sealed payload a TAI64N Timestamp
//	type 2  handshake response  Noise XXpsk0 message 2 (responder -> initiator)
//	type 3  handshake final     Noise XXpsk0 message 3 (initiator -> responder)
//	type 4  data                sealed IP packet; empty plaintext = keepalive
//	type 5  gossip              sealed Gossip (peers the sender knows)
//	type 6  relay forward       sealed RelayEnvelope: "please forward to Peer"
//	type 7  relay deliver       sealed RelayEnvelope: "this came from Peer"
//
// Types 4..7 share the 16-byte transport header (type, 3 zero bytes, 32-bit
// receiver index, 64-bit counter, little endian) followed by the ChaCha20-
// Poly1305 ciphertext and its 16-byte tag; the header is the AEAD's
// additional data, so a packet's type cannot be altered in flight.
//
// Parsers are strict (reserved bytes zero, no trailing bytes, canonical
// encodings) so that Parse followed by Marshal gives back the input bytes.
// Parsed byte slices alias the input.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Packet types.
const (
	TypeHandshakeInit  = 1
	TypeHandshakeResp  = 2
	TypeHandshakeFinal = 3
	TypeData           = 4
	TypeGossip         = 5
	TypeRelayForward   = 6
	TypeRelayDeliver   = 7
)

// Sizes.
const (
	// HeaderLen is the transport header: type(1) zero(3) receiver(4) counter(8).
	HeaderLen = 16
	// TagLen is the Poly1305 tag appended to every sealed payload.
	TagLen = 16
	// TransportMinLen is the shortest transport packet (a keepalive).
	TransportMinLen = HeaderLen + TagLen
	// PeerIDLen is the length of a peer ID in a relay envelope.
	PeerIDLen = 8
	// RelayOverhead is what relaying adds to a transport packet: an outer
	// header, the peer ID and an outer tag.
	RelayOverhead = HeaderLen + PeerIDLen + TagLen
	// Overhead is what a direct transport packet adds to an IP packet.
	Overhead = HeaderLen + TagLen

	// noise XXpsk0 with X25519 and empty/short payloads.
	dhLen             = 32
	handshakeInitLen  = 8 + dhLen + TimestampLen + TagLen    // 68, payload: a Timestamp
	handshakeRespMin  = 12 + dhLen + dhLen + TagLen + TagLen // 108
	handshakeFinalMin = 8 + dhLen + TagLen + TagLen          // 72
	// MaxHandshakeLen bounds the handshake messages we accept or produce.
	MaxHandshakeLen = 1400
)

// Errors returned by the parsers.
var (
	ErrShort    = errors.New("wire: packet too short")
	ErrLong     = errors.New("wire: packet too long")
	ErrType     = errors.New("wire: wrong packet type")
	ErrReserved = errors.New("wire: reserved bytes not zero")
	ErrFormat   = errors.New("wire: malformed packet")
)

// Type returns the packet type of b, or 0 if b is too short or its reserved
// bytes are not zero.
func Type(b []byte) byte {
	if len(b) < 4 || b[1]|b[2]|b[3] != 0 {
		return 0
	}
	return b[0]
}

func checkType(b []byte, want byte, min int) error {
	if len(b) < min {
		return ErrShort
	}
	if b[0] != want {
		return ErrType
	}
	if b[1]|b[2]|b[3] != 0 {
		return ErrReserved
	}
	return nil
}

// HandshakeInit is message 1 of the handshake.
type HandshakeInit struct {
	Sender uint32 // initiator's session index
	Noise  []byte // Noise message: ephemeral key and sealed Timestamp
}

// InitEphemeral returns the initiator's ephemeral public key, the first
// bytes of a HandshakeInit's Noise message: it names one handshake attempt.
func (m HandshakeInit) InitEphemeral() [32]byte { return [32]byte(m.Noise[:dhLen]) }

// InitNoiseLen is the fixed length of HandshakeInit.Noise.
const InitNoiseLen = handshakeInitLen - 8

// ParseHandshakeInit parses a type 1 packet.
func ParseHandshakeInit(b []byte) (HandshakeInit, error) {
	if err := checkType(b, TypeHandshakeInit, handshakeInitLen); err != nil {
		return HandshakeInit{}, err
	}
	if len(b) != handshakeInitLen {
		return HandshakeInit{}, ErrLong
	}
	return HandshakeInit{Sender: binary.LittleEndian.Uint32(b[4:]), Noise: b[8:]}, nil
}

// AppendHandshakeInit appends the packet to dst.
func (m HandshakeInit) Append(dst []byte) ([]byte, error) {
	if len(m.Noise) != InitNoiseLen {
		return dst, fmt.Errorf("handshake init noise length %d: %w", len(m.Noise), ErrFormat)
	}
	dst = append(dst, TypeHandshakeInit, 0, 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, m.Sender)
	return append(dst, m.Noise...), nil
}

// HandshakeResp is message 2 of the handshake.
type HandshakeResp struct {
	Sender   uint32 // responder's session index
	Receiver uint32 // initiator's session index from HandshakeInit
	Noise    []byte // ephemeral, sealed static key, sealed NodeInfo
}

// ParseHandshakeResp parses a type 2 packet.
func ParseHandshakeResp(b []byte) (HandshakeResp, error) {
	if err := checkType(b, TypeHandshakeResp, handshakeRespMin); err != nil {
		return HandshakeResp{}, err
	}
	if len(b) > MaxHandshakeLen {
		return HandshakeResp{}, ErrLong
	}
	return HandshakeResp{
		Sender:   binary.LittleEndian.Uint32(b[4:]),
		Receiver: binary.LittleEndian.Uint32(b[8:]),
		Noise:    b[12:],
	}, nil
}

// Append appends the packet to dst.
func (m HandshakeResp) Append(dst []byte) ([]byte, error) {
	if n := 12 + len(m.Noise); n < handshakeRespMin || n > MaxHandshakeLen {
		return dst, fmt.Errorf("handshake response length %d: %w", n, ErrFormat)
	}
	dst = append(dst, TypeHandshakeResp, 0, 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, m.Sender)
	dst = binary.LittleEndian.AppendUint32(dst, m.Receiver)
	return append(dst, m.Noise...), nil
}

// HandshakeFinal is message 3 of the handshake.
type HandshakeFinal struct {
	Receiver uint32 // responder's session index from HandshakeResp
	Noise    []byte // sealed static key, sealed NodeInfo
}

// ParseHandshakeFinal parses a type 3 packet.
func ParseHandshakeFinal(b []byte) (HandshakeFinal, error) {
	if err := checkType(b, TypeHandshakeFinal, handshakeFinalMin); err != nil {
		return HandshakeFinal{}, err
	}
	if len(b) > MaxHandshakeLen {
		return HandshakeFinal{}, ErrLong
	}
	return HandshakeFinal{Receiver: binary.LittleEndian.Uint32(b[4:]), Noise: b[8:]}, nil
}

// Append appends the packet to dst.
func (m HandshakeFinal) Append(dst []byte) ([]byte, error) {
	if n := 8 + len(m.Noise); n < handshakeFinalMin || n > MaxHandshakeLen {
		return dst, fmt.Errorf("handshake final length %d: %w", n, ErrFormat)
	}
	dst = append(dst, TypeHandshakeFinal, 0, 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, m.Receiver)
	return append(dst, m.Noise...), nil
}

// TimestampLen is the length of a TAI64N timestamp.
const TimestampLen = 12

// tai64Base is TAI64's label of the Unix epoch (2^62, ignoring leap
// seconds, as WireGuard does).
const tai64Base = uint64(0x4000000000000000)

// Timestamp is the plaintext of message 1: when the initiator made it,
// as TAI64N (8 bytes of seconds, 4 of nanoseconds, big endian), the
// encoding WireGuard's handshake initiation carries.
type Timestamp struct {
	Seconds uint64 // TAI64 label: 2^62 + Unix seconds
	Nanos   uint32 // below 1e9
}

// TimestampOf returns t as a Timestamp.
func TimestampOf(t time.Time) Timestamp {
	return Timestamp{Seconds: tai64Base + uint64(t.Unix()), Nanos: uint32(t.Nanosecond())}
}

// Time returns the timestamp as a time.Time.
func (ts Timestamp) Time() time.Time {
	return time.Unix(int64(ts.Seconds-tai64Base), int64(ts.Nanos))
}

// ParseTimestamp parses a TAI64N timestamp of exactly TimestampLen bytes,
// refusing labels before 1970 or past 2^63 and nanoseconds of 1e9 or more.
func ParseTimestamp(b []byte) (Timestamp, error) {
	if len(b) < TimestampLen {
		return Timestamp{}, ErrShort
	}
	if len(b) > TimestampLen {
		return Timestamp{}, ErrLong
	}
	ts := Timestamp{Seconds: binary.BigEndian.Uint64(b), Nanos: binary.BigEndian.Uint32(b[8:])}
	if ts.Seconds < tai64Base || ts.Seconds >= 1<<63 || ts.Nanos >= 1e9 {
		return Timestamp{}, ErrFormat
	}
	return ts, nil
}

// Append appends the encoded timestamp to dst.
func (ts Timestamp) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, ts.Seconds)
	return binary.BigEndian.AppendUint32(dst, ts.Nanos)
}

// TransportHeader is the header of packet types 4..7.
type TransportHeader struct {
	Type     byte
	Receiver uint32 // receiver's session index
	Counter  uint64 // nonce counter
}

// IsTransport reports whether t is one of the transport types.
func IsTransport(t byte) bool { return t >= TypeData && t <= TypeRelayDeliver }

// ParseTransportHeader parses the header of a transport packet of at least
// TransportMinLen bytes. The sealed payload is b[HeaderLen:].
func ParseTransportHeader(b []byte) (TransportHeader, error) {
	if len(b) < TransportMinLen {
		return TransportHeader{}, ErrShort
	}
	if !IsTransport(b[0]) {
		return TransportHeader{}, ErrType
	}
	if b[1]|b[2]|b[3] != 0 {
		return TransportHeader{}, ErrReserved
	}
	return TransportHeader{
		Type:     b[0],
		Receiver: binary.LittleEndian.Uint32(b[4:]),
		Counter:  binary.LittleEndian.Uint64(b[8:]),
	}, nil
}

// Put writes h into b[:HeaderLen]. It does not allocate.
func (h TransportHeader) Put(b []byte) {
	_ = b[HeaderLen-1]
	b[0], b[1], b[2], b[3] = h.Type, 0, 0, 0
	binary.LittleEndian.PutUint32(b[4:], h.Receiver)
	binary.LittleEndian.PutUint64(b[8:], h.Counter)
}

// RelayEnvelope is the plaintext of a relay packet (types 6 and 7): the peer
// ID of the final destination (forward) or of the original sender (deliver),
// followed by a complete inner packet of types 1..5, sealed end to end.
type RelayEnvelope struct {
	Peer  uint64
	Inner []byte
}

// ParseRelayEnvelope parses a relay plaintext. The inner packet must be a
// non-relay packet of at least 4 bytes.
func ParseRelayEnvelope(b []byte) (RelayEnvelope, error) {
	if len(b) < PeerIDLen+4 {
		return RelayEnvelope{}, ErrShort
	}
	t := Type(b[PeerIDLen:])
	if t < TypeHandshakeInit || t > TypeGossip {
		return RelayEnvelope{}, ErrFormat
	}
	return RelayEnvelope{Peer: binary.BigEndian.Uint64(b), Inner: b[PeerIDLen:]}, nil
}

// Append appends the envelope to dst.
func (e RelayEnvelope) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, e.Peer)
	return append(dst, e.Inner...)
}

// PeerID is the short name of a static public key used in relay envelopes:
// its first eight bytes.
func PeerID(key [32]byte) uint64 { return binary.BigEndian.Uint64(key[:8]) }

// PutPeerID writes id into b[:PeerIDLen].
func PutPeerID(b []byte, id uint64) { binary.BigEndian.PutUint64(b, id) }

// NodeInfo is what a node tells a peer about itself, sealed inside handshake
// messages 2 and 3: the prefixes (its mesh address as a /32 and any
// announced networks) that should be routed to it.
type NodeInfo struct {
	Prefixes []netip.Prefix
}

const nodeInfoVersion = 1

// MaxPrefixes bounds the prefixes of one node.
const MaxPrefixes = 64

// ParseNodeInfo parses a NodeInfo.
func ParseNodeInfo(b []byte) (NodeInfo, error) {
	if len(b) < 2 {
		return NodeInfo{}, ErrShort
	}
	if b[0] != nodeInfoVersion {
		return NodeInfo{}, ErrFormat
	}
	ps, rest, err := parsePrefixes(b[1:])
	if err != nil {
		return NodeInfo{}, err
	}
	if len(rest) != 0 {
		return NodeInfo{}, ErrLong
	}
	return NodeInfo{Prefixes: ps}, nil
}

// Append appends the encoded NodeInfo to dst.
func (n NodeInfo) Append(dst []byte) ([]byte, error) {
	dst = append(dst, nodeInfoVersion)
	return appendPrefixes(dst, n.Prefixes)
}

func parsePrefixes(b []byte) ([]netip.Prefix, []byte, error) {
	if len(b) < 1 {
		return nil, nil, ErrShort
	}
	n := int(b[0])
	b = b[1:]
	if n > MaxPrefixes {
		return nil, nil, ErrFormat
	}
	var ps []netip.Prefix
	if n > 0 {
		ps = make([]netip.Prefix, 0, n)
	}
	for range n {
		a, rest, err := parseAddr(b)
		if err != nil {
			return nil, nil, err
		}
		if !a.IsValid() || len(rest) < 1 {
			return nil, nil, ErrFormat
		}
		p, err := a.Prefix(int(rest[0]))
		if err != nil || int(rest[0]) > a.BitLen() {
			return nil, nil, ErrFormat
		}
		// keep host bits as sent so that marshalling round-trips
		p = netip.PrefixFrom(a, int(rest[0]))
		ps = append(ps, p)
		b = rest[1:]
	}
	return ps, b, nil
}

func appendPrefixes(dst []byte, ps []netip.Prefix) ([]byte, error) {
	if len(ps) > MaxPrefixes {
		return dst, fmt.Errorf("%d prefixes: %w", len(ps), ErrFormat)
	}
	dst = append(dst, byte(len(ps)))
	for _, p := range ps {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return dst, fmt.Errorf("prefix %v: %w", p, ErrFormat)
		}
		dst = appendAddr(dst, p.Addr())
		dst = append(dst, byte(p.Bits()))
	}
	return dst, nil
}

// address encoding: family byte 0 (none), 4 (+4 bytes) or 6 (+16 bytes).
func parseAddr(b []byte) (netip.Addr, []byte, error) {
	if len(b) < 1 {
		return netip.Addr{}, nil, ErrShort
	}
	switch b[0] {
	case 0:
		return netip.Addr{}, b[1:], nil
	case 4:
		if len(b) < 5 {
			return netip.Addr{}, nil, ErrShort
		}
		return netip.AddrFrom4([4]byte(b[1:5])), b[5:], nil
	case 6:
		if len(b) < 17 {
			return netip.Addr{}, nil, ErrShort
		}
		return netip.AddrFrom16([16]byte(b[1:17])), b[17:], nil
	}
	return netip.Addr{}, nil, ErrFormat
}

func appendAddr(dst []byte, a netip.Addr) []byte {
	switch {
	case !a.IsValid():
		return append(dst, 0)
	case a.Is4():
		b := a.As4()
		return append(append(dst, 4), b[:]...)
	default:
		b := a.As16()
		return append(append(dst, 6), b[:]...)
	}
}

// GossipEntry describes one node in a Gossip message.
type GossipEntry struct {
	Key      [32]byte       // the node's static public key
	Endpoint netip.AddrPort // where the sender reaches it; zero if unknown or the sender itself
	Prefixes []netip.Prefix // only meaningful in the sender's own entry
}

// Gossip is the plaintext of a type 5 packet: the nodes the sender has a
// live session with, so that every node learns every other.
type Gossip struct {
	Entries []GossipEntry
}

const gossipVersion = 1

// MaxGossipEntries bounds the entries in one gossip message.
const MaxGossipEntries = 32

// ParseGossip parses a Gossip plaintext.
func ParseGossip(b []byte) (Gossip, error) {
	if len(b) < 2 {
		return Gossip{}, ErrShort
	}
	if b[0] != gossipVersion {
		return Gossip{}, ErrFormat
	}
	n := int(b[1])
	if n > MaxGossipEntries {
		return Gossip{}, ErrFormat
	}
	b = b[2:]
	g := Gossip{}
	if n > 0 {
		g.Entries = make([]GossipEntry, 0, n)
	}
	for range n {
		var e GossipEntry
		if len(b) < 32 {
			return Gossip{}, ErrShort
		}
		copy(e.Key[:], b)
		a, rest, err := parseAddr(b[32:])
		if err != nil {
			return Gossip{}, err
		}
		if a.IsValid() {
			if len(rest) < 2 {
				return Gossip{}, ErrShort
			}
			e.Endpoint = netip.AddrPortFrom(a, binary.BigEndian.Uint16(rest))
			rest = rest[2:]
		}
		e.Prefixes, b, err = parsePrefixes(rest)
		if err != nil {
			return Gossip{}, err
		}
		g.Entries = append(g.Entries, e)
	}
	if len(b) != 0 {
		return Gossip{}, ErrLong
	}
	return g, nil
}

// Append appends the encoded gossip to dst.
func (g Gossip) Append(dst []byte) ([]byte, error) {
	if len(g.Entries) > MaxGossipEntries {
		return dst, fmt.Errorf("%d gossip entries: %w", len(g.Entries), ErrFormat)
	}
	dst = append(dst, gossipVersion, byte(len(g.Entries)))
	for _, e := range g.Entries {
		dst = append(dst, e.Key[:]...)
		a := e.Endpoint.Addr()
		if a.Zone() != "" {
			return dst, fmt.Errorf("endpoint %v: %w", e.Endpoint, ErrFormat)
		}
		dst = appendAddr(dst, a)
		if a.IsValid() {
			dst = binary.BigEndian.AppendUint16(dst, e.Endpoint.Port())
		}
		var err error
		if dst, err = appendPrefixes(dst, e.Prefixes); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// IPv4Dst returns the destination address of an IPv4 packet, or false if pkt
// is not a plausible IPv4 packet.
func IPv4Dst(pkt []byte) (netip.Addr, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(pkt[16:20])), true
}

// IPv4Src returns the source address of an IPv4 packet.
func IPv4Src(pkt []byte) (netip.Addr, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(pkt[12:16])), true
}
