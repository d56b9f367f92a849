//go:build !linux

package conn

import "sync/atomic"

type mmsgReader struct{}

func (u *UDP) initFastRead(gro bool) {}

// Coalesced counts datagrams that arrived coalesced: none here.
func (u *UDP) Coalesced() uint64 { return 0 }

func (u *UDP) readFast(msgs []Message) (int, error) { panic("unreachable") }

type gsoWriter struct{ off atomic.Bool }

func (u *UDP) initGSO() {}

func (u *UDP) writeGSO(msgs []Message) error { panic("unreachable") }
