package cache

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"hash"
)

// algorithm is a supported digest algorithm; the zero value marks an invalid Digest.
type algorithm uint8

const (
	algoNone algorithm = iota
	algoSHA256
	algoSHA512
)

// name is the algorithm as written in digests and in the blobs/<name>/ directory.
func (a algorithm) name() string {
	switch a {
	case algoSHA256:
		return "sha256"
	case algoSHA512:
		return "sha512"
	}
	return ""
}

// size is the length of the raw sum in bytes.
func (a algorithm) size() int {
	switch a {
	case algoSHA256:
		return sha256.Size
	case algoSHA512:
		return sha512.Size
	}
	return 0
}

func (a algorithm) newHash() hash.Hash {
	if a == algoSHA512 {
		return sha512.New()
	}
	return sha256.New()
}

// Digest identifies a blob by the hash of its bytes. It is comparable, so it serves as a map key, and
// it holds the raw sum rather than the hex text so that it is fixed-size and never allocates.
// The zero Digest is invalid; obtain one from ParseDigest or ParseDigestBytes.
type Digest struct {
	algo algorithm
	sum  [sha512.Size]byte // sha256 uses the first 32 bytes; the rest stay zero
}

// ParseDigest parses "sha256:<64 lowercase hex>" or "sha512:<128 lowercase hex>", the only forms
// registries use (OCI image spec, "Digests"). Anything else returns ErrInvalidDigest. It does not allocate.
func ParseDigest(s string) (Digest, error) { return parseDigest(s) }

// ParseDigestBytes is ParseDigest for a []byte, such as a fasthttp path view; b is not retained.
func ParseDigestBytes(b []byte) (Digest, error) { return parseDigest(b) }

func parseDigest[T string | []byte](s T) (Digest, error) {
	var d Digest
	// The six-byte prefix "shaNNN" is shared by both algorithms; the length decides which one it is.
	const prefix = "sha"
	if len(s) < 7 || s[0] != prefix[0] || s[1] != prefix[1] || s[2] != prefix[2] || s[6] != ':' {
		return Digest{}, ErrInvalidDigest
	}
	switch {
	case s[3] == '2' && s[4] == '5' && s[5] == '6' && len(s) == 7+2*sha256.Size:
		d.algo = algoSHA256
	case s[3] == '5' && s[4] == '1' && s[5] == '2' && len(s) == 7+2*sha512.Size:
		d.algo = algoSHA512
	default:
		return Digest{}, ErrInvalidDigest
	}
	for i := 0; i < d.algo.size(); i++ {
		hi, lo := unhex[s[7+2*i]], unhex[s[8+2*i]]
		if hi|lo > 0xf {
			return Digest{}, ErrInvalidDigest
		}
		d.sum[i] = hi<<4 | lo
	}
	return d, nil
}

// unhex maps lowercase hex digits to their value and every other byte to 0xff. Uppercase is refused,
// as in the OCI digest grammar for the registered algorithms.
var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c - 'a' + 10)
	}
	return t
}()

// IsZero reports whether d is the zero (invalid) Digest.
func (d Digest) IsZero() bool { return d.algo == algoNone }

// Algorithm returns "sha256" or "sha512", or "" for the zero Digest.
func (d Digest) Algorithm() string { return d.algo.name() }

// Hex returns the lowercase hex encoding of the sum.
func (d Digest) Hex() string { return hex.EncodeToString(d.rawSum()) }

// Append appends the text form "algorithm:hex" to dst and returns the extended slice; use it instead
// of String on hot paths.
func (d Digest) Append(dst []byte) []byte {
	if d.algo == algoNone {
		return dst
	}
	dst = append(dst, d.algo.name()...)
	dst = append(dst, ':')
	return hex.AppendEncode(dst, d.rawSum())
}

// String returns the text form "algorithm:hex", or "" for the zero Digest.
func (d Digest) String() string {
	var buf [7 + 2*sha512.Size]byte
	return string(d.Append(buf[:0]))
}

func (d *Digest) rawSum() []byte { return d.sum[:d.algo.size()] }
