// Package limit enforces per-client abuse limits for a public mirror: a request-rate token
// bucket, concurrent blob downloads and a daily byte budget, keyed by client IP.
package limit
