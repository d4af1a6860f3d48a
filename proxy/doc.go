// Package proxy serves the registry API for pulls: it routes /v2/ requests to the configured
// upstream registries, relays the token flow through the mirror, and streams content back.
package proxy
