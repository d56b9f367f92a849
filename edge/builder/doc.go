// Package builder turns the labels of Swarm services into edge's route table.
//
// It exists so that the one piece of edge with real logic — reading three
// dialects of labels (edge's own edge.*, Traefik v1's traefik.frontend.*, and
// Traefik v2/v3's traefik.http.*) and deciding what Traefik should route — is
// a pure function that knows nothing of Docker clients, files or time:
// [Build] maps a list of [Service] to a [Table] plus the [Diagnostic]s that
// explain every label it had to skip. A malformed label skips only the route
// it belongs to; it never breaks the other routes.
package builder
