//go:build linux

// Package nxdns is the test rig's stand-in for a VPS's upstream DNS
// resolver: a UDP responder that answers every query "no such name" at once.
//
// It exists because the one-machine topology (scripts/topo.sh) has no way
// out: Docker's embedded DNS forwards names it does not know (a dnsrr
// service whose task is not up yet) to the upstream servers, gets no answer
// and stays silent, so a Go client (Traefik) waits out its 5 s resolver
// timeout before it asks again. A real resolver says NXDOMAIN in
// milliseconds; this one does too. Give containers `--dns ADDR`.
package nxdns

import (
	"net"
	"sync"

	"github.com/homeswarm/homeswarm/internal/netns"
)

// Server answers DNS queries on one UDP socket. Close stops it and waits.
type Server struct {
	conn net.PacketConn
	wg   sync.WaitGroup
}

// Listen binds addr ("203.0.113.10:53") inside the network namespace at
// netnsPath ("/run/netns/he-vps"; empty: the caller's) and serves until Close.
func Listen(netnsPath, addr string) (*Server, error) {
	var conn net.PacketConn
	var err error
	if netnsPath == "" {
		conn, err = net.ListenPacket("udp4", addr)
	} else {
		conn, err = netns.ListenPacket(netnsPath, "udp4", addr)
	}
	if err != nil {
		return nil, err
	}
	s := &Server{conn: conn}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr is the address the server answers on.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// Close stops the server and waits for it.
func (s *Server) Close() error {
	err := s.conn.Close()
	s.wg.Wait()
	return err
}

func (s *Server) serve() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := NXDomain(buf[:n]); resp != nil {
			s.conn.WriteTo(resp, from)
		}
	}
}

// NXDomain returns the answer "no such name" to query: its header and
// question, no records. It returns nil for anything that is not a
// well-formed query with one question.
func NXDomain(query []byte) []byte {
	if len(query) < 12 || query[2]&0x80 != 0 || query[4] != 0 || query[5] != 1 {
		return nil
	}
	i := 12
	for {
		if i >= len(query) {
			return nil
		}
		l := int(query[i])
		if l == 0 {
			i++
			break
		}
		if l&0xc0 != 0 {
			return nil
		}
		i += 1 + l
	}
	i += 4 // type, class
	if i > len(query) {
		return nil
	}
	resp := append([]byte(nil), query[:i]...)
	resp[2] = 0x80 | query[2]&0x79 // QR, opcode and RD from the query
	resp[3] = 0x80 | 3             // RA, NXDOMAIN
	for j := 6; j < 12; j++ {      // no answer, authority or additional records
		resp[j] = 0
	}
	return resp
}
