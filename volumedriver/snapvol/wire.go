package snapvol

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/gob"
	"fmt"
	"net"
	"time"
)

// Gen names one generation of a volume: the writer's epoch (a new writer
// takes a higher one) and a sequence number within it. Generations order
// by epoch, then sequence.
type Gen struct{ Epoch, Seq uint64 }

// IsZero reports whether g names no generation.
func (g Gen) IsZero() bool { return g == Gen{} }

// Less orders generations.
func (g Gen) Less(o Gen) bool { return g.Epoch < o.Epoch || (g.Epoch == o.Epoch && g.Seq < o.Seq) }

// String is the generation's directory name under gens/.
func (g Gen) String() string { return fmt.Sprintf("%016x-%016x", g.Epoch, g.Seq) }

func parseGen(s string) (Gen, bool) {
	var g Gen
	if len(s) != 33 {
		return g, false
	}
	if _, err := fmt.Sscanf(s, "%016x-%016x", &g.Epoch, &g.Seq); err != nil || g.String() != s {
		return Gen{}, false
	}
	return g, true
}

// reqKind is a request from one node to another.
type reqKind uint8

const (
	reqQuery   reqKind = iota + 1 // what do you hold of Volume, who writes it
	reqClaim                      // Writer takes (or renews) Volume at Epoch
	reqRelease                    // Writer let go of Volume at Epoch, last Gen
	reqPush                       // here comes Gen (Have: bases I hold)
	reqPull                       // send me your newest Gen (Have: bases I hold)
)

// msg is every message on the wire: a request, a reply or one operation
// of a generation stream (see opKind). gob encodes only the fields set.
type msg struct {
	Req    reqKind
	Kind   opKind
	Volume string
	Epoch  uint64
	Writer string
	Gen    Gen
	Base   Gen
	Have   []Gen
	Err    string

	// replies to reqQuery
	Lease     bool // Writer's lease is live
	LeaseLeft time.Duration
	Released  bool
	Latest    Gen

	// operations
	Path   string
	Mode   uint32
	UID    int
	GID    int
	MTime  int64
	Size   int64
	Fresh  bool
	Target string
	Off    int64
	Len    int64
	Data   []byte
}

// conn is one TLS connection to a peer; messages are gob values.
type conn struct {
	c    net.Conn
	bw   *bufio.Writer
	enc  *gob.Encoder
	dec  *gob.Decoder
	peer string
}

func newConn(c net.Conn, peer string) *conn {
	bw := bufio.NewWriterSize(c, 256<<10)
	return &conn{c: c, bw: bw, enc: gob.NewEncoder(bw), dec: gob.NewDecoder(bufio.NewReaderSize(c, 256<<10)), peer: peer}
}

// idle bounds how long one message may take to arrive or leave.
const idle = 10 * time.Second

func (c *conn) send(m *msg) error {
	c.c.SetWriteDeadline(time.Now().Add(idle))
	return c.enc.Encode(m)
}

func (c *conn) flush() error {
	c.c.SetWriteDeadline(time.Now().Add(idle))
	return c.bw.Flush()
}

// call sends m and waits for the reply.
func (c *conn) call(m *msg) (*msg, error) {
	if err := c.send(m); err != nil {
		return nil, err
	}
	if err := c.flush(); err != nil {
		return nil, err
	}
	return c.recv()
}

func (c *conn) recv() (*msg, error) {
	c.c.SetReadDeadline(time.Now().Add(idle))
	m := new(msg)
	if err := c.dec.Decode(m); err != nil {
		return nil, err
	}
	return m, nil
}

// Close closes the connection; a nil conn is already closed.
func (c *conn) Close() error {
	if c == nil {
		return nil
	}
	return c.c.Close()
}

// tlsConfig is the configuration for both ends: each presents its device
// certificate and accepts only a peer that verify admits.
func tlsConfig(cert tls.Certificate, verify func(raw []byte) (string, bool)) *tls.Config {
	return &tls.Config{
		Certificates:       []tls.Certificate{cert},
		ClientAuth:         tls.RequireAnyClientCert,
		InsecureSkipVerify: true, // self-signed device certificates: verified below
		MinVersion:         tls.VersionTLS13,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errNotMember
			}
			if _, ok := verify(raw[0]); !ok {
				return errNotMember
			}
			return nil
		},
	}
}
