// Package baseline is a net/http registry pull-through proxy that does the same pass-through work
// as docxy's proxy package (routing, path validation, header allowlists, token relay, server-side
// blob redirects), so that benchmarks measure the HTTP stack and not a difference in features.
package baseline
