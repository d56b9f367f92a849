//go:build !linux

package conn

type mmsgReader struct{}

func (u *UDP) initFastRead() {}

func (u *UDP) readFast(msgs []Message) (int, error) { panic("unreachable") }
