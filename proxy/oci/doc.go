// Package oci holds the pure protocol pieces of the OCI distribution API that docxy needs for pulls:
// request path parsing, name/tag/digest validation, media types and the registry error codes.
// It does no I/O and keeps no state.
package oci
