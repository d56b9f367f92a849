// Package proxyproto reads the PROXY protocol v2 header a proxy (Traefik's
// TCP routes with proxyProtocol.version 2) sends before a connection's
// bytes, so that a backend learns the client's real address.
//
// It exists for the project's own backends and tests (edge's Traefik tests,
// the e2e test image): one parser, fuzzed, instead of one per test. It reads
// only what it needs: the signature, the command, TCP or UDP over IPv4 or
// IPv6, and skips the TLVs.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Signature opens every PROXY protocol v2 header.
const Signature = "\r\n\r\n\x00\r\nQUIT\n"

// ErrNotV2 means the bytes are not a PROXY protocol v2 header.
var ErrNotV2 = errors.New("proxyproto: not a PROXY protocol v2 header")

// Header is a parsed PROXY protocol v2 header.
type Header struct {
	// Local is true for the LOCAL command (the proxy's own connection, a
	// health check): Source and Dest are then invalid.
	Local bool
	// Source is the client's address and Dest the address it connected to.
	Source, Dest netip.AddrPort
}

// maxBody bounds the header's length field (addresses and TLVs).
const maxBody = 1 << 12

// Read reads one PROXY protocol v2 header from r, which should be buffered
// (it reads exactly the header's bytes, so the connection's data follows).
func Read(r io.Reader) (Header, error) {
	var h [16]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Header{}, fmt.Errorf("proxyproto: read header: %w", err)
	}
	if !bytes.Equal(h[:12], []byte(Signature)) || h[12]>>4 != 2 {
		return Header{}, fmt.Errorf("%w: % x", ErrNotV2, h[:13])
	}
	n := int(binary.BigEndian.Uint16(h[14:]))
	if n > maxBody {
		return Header{}, fmt.Errorf("%w: length %d", ErrNotV2, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Header{}, fmt.Errorf("proxyproto: read addresses: %w", err)
	}
	return parse(h[12], h[13], body)
}

func parse(cmd, fam byte, body []byte) (Header, error) {
	switch cmd & 0xf {
	case 0: // LOCAL
		return Header{Local: true}, nil
	case 1: // PROXY
	default:
		return Header{}, fmt.Errorf("%w: command %#x", ErrNotV2, cmd&0xf)
	}
	if proto := fam & 0xf; proto != 1 && proto != 2 { // STREAM, DGRAM
		return Header{}, fmt.Errorf("%w: transport %#x (only TCP and UDP)", ErrNotV2, proto)
	}
	var size int
	switch fam >> 4 {
	case 1:
		size = 4
	case 2:
		size = 16
	default:
		return Header{}, fmt.Errorf("%w: address family %#x (only IPv4 and IPv6)", ErrNotV2, fam>>4)
	}
	if len(body) < 2*size+4 {
		return Header{}, fmt.Errorf("%w: %d address bytes, want %d", ErrNotV2, len(body), 2*size+4)
	}
	src, _ := netip.AddrFromSlice(body[:size])
	dst, _ := netip.AddrFromSlice(body[size : 2*size])
	ports := body[2*size:]
	return Header{
		Source: netip.AddrPortFrom(src, binary.BigEndian.Uint16(ports)),
		Dest:   netip.AddrPortFrom(dst, binary.BigEndian.Uint16(ports[2:])),
	}, nil
}

// Append appends h as a PROXY protocol v2 header (PROXY over TCP, or LOCAL)
// to b: what a proxy sends, for tests.
func Append(b []byte, h Header) []byte {
	b = append(b, Signature...)
	if h.Local {
		return append(b, 0x20, 0x00, 0, 0)
	}
	src, dst := h.Source.Addr(), h.Dest.Addr()
	fam := byte(0x11)
	if !src.Is4() || !dst.Is4() {
		fam, src, dst = 0x21, netip.AddrFrom16(src.As16()), netip.AddrFrom16(dst.As16())
	}
	b = append(b, 0x21, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(2*len(src.AsSlice())+4))
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, h.Source.Port())
	return binary.BigEndian.AppendUint16(b, h.Dest.Port())
}
