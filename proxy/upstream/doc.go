// Package upstream talks to the registries docxy mirrors: pooled connections per host, the
// /v2/ auth challenge, the mirror's own tokens, and blob redirects followed server-side.
package upstream
