package conn

// ListenNoGRO is Listen without UDP_GRO: every datagram is read alone.
func ListenNoGRO(port int) (*UDP, error) { return listen(port, false) }
