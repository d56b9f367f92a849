//go:build tools

// Package tools records the Traefik command this module builds, so that
// `go mod tidy` keeps its dependencies in go.sum. It is never compiled.
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
