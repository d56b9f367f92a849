//go:build !linux

package syncengine

import "github.com/syncthing/notify"

var watchEvents = []notify.Event{notify.All}

func createdByOpen(notify.EventInfo) bool { return false }

func startWriteback(string) {}
