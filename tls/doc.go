// Package tls provides docxy's server TLS setup: certificates from PEM files that are reloaded when they change, or from an ACME CA through autocert.
package tls
