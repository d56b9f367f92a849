package mesh

// The replay filter is WireGuard's (RFC 6479 style): a ring of 64-bit blocks
// holding one bit per counter, so that checking and sliding cost O(1) and no
// allocation. The ring is 8192 bits; one block is always being recycled, so
// the usable window is windowSize (8128, as in wireguard-go) counters behind
// the highest seen: what the README states (TestReplayWindowMatchesREADME).
const (
	blockBitLog = 6
	blockBits   = 1 << blockBitLog // 64
	ringBlocks  = 128              // 8192 bits
	blockMask   = ringBlocks - 1
	windowSize  = (ringBlocks - 1) * blockBits // 8128

	// rejectAfterMessages is the hard limit of a session's counter.
	rejectAfterMessages = ^uint64(0) - (1 << 13)
)

type replayFilter struct {
	last uint64
	ring [ringBlocks]uint64
}

// check reports whether counter could be fresh, without recording it. Use it
// to drop replays before paying for decryption.
func (f *replayFilter) check(counter uint64) bool {
	if counter >= rejectAfterMessages {
		return false
	}
	if counter > f.last {
		return true
	}
	if f.last-counter > windowSize {
		return false
	}
	return f.ring[(counter>>blockBitLog)&blockMask]&(1<<(counter&(blockBits-1))) == 0
}

// accept records counter and reports whether it was fresh. Call it only for
// authenticated packets.
func (f *replayFilter) accept(counter uint64) bool {
	if counter >= rejectAfterMessages {
		return false
	}
	index := counter >> blockBitLog
	if counter > f.last {
		current := f.last >> blockBitLog
		diff := index - current
		if diff > ringBlocks {
			diff = ringBlocks
		}
		for i := current + 1; i <= current+diff; i++ {
			f.ring[i&blockMask] = 0
		}
		f.last = counter
	} else if f.last-counter > windowSize {
		return false
	}
	index &= blockMask
	bit := uint64(1) << (counter & (blockBits - 1))
	old := f.ring[index]
	f.ring[index] = old | bit
	return old&bit == 0
}
