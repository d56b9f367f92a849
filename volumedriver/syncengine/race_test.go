//go:build race

package syncengine

const raceEnabled = true
