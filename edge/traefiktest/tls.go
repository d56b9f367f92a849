package traefiktest

import "crypto/tls"

// insecureTLS accepts Traefik's self-signed default certificate: the tests
// check routing, not certificates.
func insecureTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true} //nolint:gosec // test-only, 127.0.0.1
}
