//go:build !linux

package conn

import "sync/atomic"

type mmsgReader struct{}

func (u *UDP) initFastRead() {}

func (u *UDP) readFast(msgs []Message) (int, error) { panic("unreachable") }

type gsoWriter struct{ off atomic.Bool }

func (u *UDP) initGSO() {}

func (u *UDP) writeGSO(msgs []Message) error { panic("unreachable") }
