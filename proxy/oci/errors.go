package oci

import (
	"encoding/json"
	"net/http"
)

// ErrorCode is a registry error code from the distribution spec.
type ErrorCode string

// The error codes docxy emits itself. Upstream errors are relayed unchanged.
const (
	ErrorCodeNameInvalid     ErrorCode = "NAME_INVALID"
	ErrorCodeNameUnknown     ErrorCode = "NAME_UNKNOWN"
	ErrorCodeDigestInvalid   ErrorCode = "DIGEST_INVALID"
	ErrorCodeManifestInvalid ErrorCode = "MANIFEST_INVALID"
	ErrorCodeManifestUnknown ErrorCode = "MANIFEST_UNKNOWN"
	ErrorCodeBlobUnknown     ErrorCode = "BLOB_UNKNOWN"
	ErrorCodeUnauthorized    ErrorCode = "UNAUTHORIZED"
	ErrorCodeDenied          ErrorCode = "DENIED"
	ErrorCodeUnsupported     ErrorCode = "UNSUPPORTED"
	ErrorCodeTooManyRequests ErrorCode = "TOOMANYREQUESTS"
	ErrorCodeUnavailable     ErrorCode = "UNAVAILABLE"
	ErrorCodeNotFound        ErrorCode = "NOT_FOUND"
	ErrorCodeRangeInvalid    ErrorCode = "RANGE_INVALID"
	ErrorCodeSizeInvalid     ErrorCode = "SIZE_INVALID"
)

// Status returns the HTTP status the distribution spec pairs with the code.
func (c ErrorCode) Status() int {
	switch c {
	case ErrorCodeNameInvalid, ErrorCodeDigestInvalid, ErrorCodeManifestInvalid, ErrorCodeSizeInvalid:
		return http.StatusBadRequest
	case ErrorCodeNameUnknown, ErrorCodeManifestUnknown, ErrorCodeBlobUnknown, ErrorCodeNotFound:
		return http.StatusNotFound
	case ErrorCodeUnauthorized:
		return http.StatusUnauthorized
	case ErrorCodeDenied:
		return http.StatusForbidden
	case ErrorCodeUnsupported:
		return http.StatusMethodNotAllowed
	case ErrorCodeTooManyRequests:
		return http.StatusTooManyRequests
	case ErrorCodeRangeInvalid:
		return http.StatusRequestedRangeNotSatisfiable
	case ErrorCodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Error is one entry of the registry error envelope.
type Error struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	Detail  any       `json:"detail,omitempty"`
}

// ErrorBody returns {"errors":[{"code":...,"message":...}]} for one error. Callers on the request
// path prebuild their bodies once with it instead of marshalling per request.
func ErrorBody(code ErrorCode, message string) []byte {
	b, err := json.Marshal(struct {
		Errors []Error `json:"errors"`
	}{[]Error{{Code: code, Message: message}}})
	if err != nil {
		panic("BUG: cannot marshal registry error: " + err.Error())
	}
	return b
}
