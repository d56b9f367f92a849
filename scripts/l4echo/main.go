// Command l4echo is the TCP, TLS and UDP backend of the e2e tests and the
// edge benchmark (image homeswarm/l4echo): a service behind Traefik's TCP
// and UDP routes that says which task answered and which client it sees.
//
//	l4echo tcp [-port 7000] [-proxy]    on connect, the banner line
//	                                    "l4echo HOST client ADDR", then each line back as "HOST LINE"
//	l4echo tls -name NAME [-port 8443]  the same over TLS, with a self-signed certificate for NAME
//	                                    (the banner names NAME instead of HOST)
//	l4echo udp [-port 9000]             each datagram back as "HOST client ADDR DATAGRAM"
//	l4echo tcp -udp …                   tcp, and udp on the same port number
//
// With -proxy every connection must start with a PROXY protocol v2 header
// (Traefik's proxyProtocol.version 2), whose source address is the client
// reported; without it, the connection's peer (Traefik's address) is. The
// banner comes first, before the client sends anything, as SMTP's does.
//
// On SIGTERM it keeps accepting for -stop-delay (default 0) and then closes
// its listener; it exits when the established connections have ended
// (Swarm kills it at --stop-grace-period), as a server that drains does.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/homeswarm/homeswarm/internal/proxyproto"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: l4echo tcp|tls|udp [-port N] [-proxy] [-name NAME]")
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	port := fs.Int("port", map[string]int{"tcp": 7000, "tls": 8443, "udp": 9000}[mode], "port to listen on")
	proxy := fs.Bool("proxy", false, "read a PROXY protocol v2 header first")
	name := fs.String("name", "", "TLS server name of the self-signed certificate (tls)")
	stopDelay := fs.Duration("stop-delay", 0, "keep accepting this long after SIGTERM")
	alsoUDP := fs.Bool("udp", false, "tcp: also echo UDP datagrams on the same port")
	fs.Parse(os.Args[2:])
	host, _ := os.Hostname()
	addr := ":" + strconv.Itoa(*port)
	sig, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, stopped := context.WithCancel(context.Background())
	go func() {
		<-sig.Done()
		log.Printf("stopping in %v", *stopDelay)
		time.Sleep(*stopDelay)
		stopped()
	}()

	var err error
	switch mode {
	case "tcp", "tls":
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err != nil {
			break
		}
		var conf *tls.Config
		if mode == "tls" {
			if *name == "" {
				log.Fatal("l4echo tls needs -name")
			}
			cert, cerr := selfSigned(*name)
			if cerr != nil {
				log.Fatal(cerr)
			}
			conf, host = &tls.Config{Certificates: []tls.Certificate{cert}}, *name
		}
		go func() { <-ctx.Done(); ln.Close() }()
		if *alsoUDP {
			pc, uerr := net.ListenPacket("udp", addr)
			if uerr != nil {
				log.Fatal(uerr)
			}
			go func() { <-ctx.Done(); pc.Close() }()
			go serveUDP(pc, host)
		}
		log.Printf("l4echo %s on %s (proxy protocol %v, udp %v)", mode, addr, *proxy, *alsoUDP)
		err = serveTCP(ln, host, *proxy, conf)
	case "udp":
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			break
		}
		go func() { <-ctx.Done(); pc.Close() }()
		log.Printf("l4echo udp on %s", addr)
		err = serveUDP(pc, host)
	default:
		log.Fatalf("unknown mode %q: tcp, tls or udp", mode)
	}
	if err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
	active.Wait() // established connections: until they end
}

// active counts the TCP connections being served.
var active sync.WaitGroup

func serveTCP(ln net.Listener, host string, proxy bool, conf *tls.Config) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		active.Add(1)
		go func() {
			defer active.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Minute))
			if err := session(c, host, proxy, conf); err != nil && err != io.EOF {
				log.Printf("%s: %v", c.RemoteAddr(), err)
			}
		}()
	}
}

// session serves one connection: the PROXY header if asked, TLS if conf
// is set, the banner, then the echo.
func session(c net.Conn, host string, proxy bool, conf *tls.Config) error {
	client := c.RemoteAddr().String()
	var rw io.ReadWriter = c
	r := bufio.NewReader(c)
	if proxy {
		h, err := proxyproto.Read(r)
		if err != nil {
			fmt.Fprintf(c, "l4echo %s error %v\n", host, err)
			return err
		}
		if !h.Local {
			client = h.Source.String()
		}
	}
	if conf != nil {
		tc := tls.Server(bufferedConn{c, r}, conf)
		if err := tc.Handshake(); err != nil {
			return err
		}
		rw, r = tc, bufio.NewReader(tc)
	}
	if _, err := fmt.Fprintf(rw, "l4echo %s client %s\n", host, client); err != nil {
		return err
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if _, err := io.WriteString(rw, host+" "+l); err != nil {
			return err
		}
	}
}

// bufferedConn reads through r, which may hold bytes read past the PROXY
// header.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func serveUDP(pc net.PacketConn, host string) error {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		pc.WriteTo(append([]byte(fmt.Sprintf("%s client %s ", host, from)), buf[:n]...), from)
	}
}

// selfSigned is a certificate for name, valid for a day: the backend holds
// its own certificate, which Traefik passes through untouched.
func selfSigned(name string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
