package oci

import "bytes"

// Kind is the kind of object a /v2/ request path names.
type Kind uint8

// The kinds of /v2/<name>/... endpoints docxy serves.
const (
	KindInvalid Kind = iota
	KindManifest
	KindBlob
	KindTags
	KindReferrers
)

// String returns the endpoint's route name, as used in logs and metrics.
func (k Kind) String() string {
	switch k {
	case KindManifest:
		return "manifest"
	case KindBlob:
		return "blob"
	case KindTags:
		return "tags"
	case KindReferrers:
		return "referrers"
	}
	return "invalid"
}

var (
	suffixTagsList  = []byte("/tags/list")
	segManifests    = []byte("/manifests")
	segBlobs        = []byte("/blobs")
	segReferrers    = []byte("/referrers")
	maxNameLength   = 255
	maxTagLength    = 128
	sha256HexLength = 64
	sha512HexLength = 128
)

// ParsePath splits the part of a request path after "/v2/" into the repository name, the kind of
// object and its reference (tag or digest; empty for tags/list). Names contain '/', so the path is
// split from the right. It only splits: validate name and reference with ValidName, ValidReference
// and ValidDigest. The returned slices alias p.
func ParsePath(p []byte) (name []byte, kind Kind, ref []byte) {
	if bytes.HasSuffix(p, suffixTagsList) {
		return p[:len(p)-len(suffixTagsList)], KindTags, nil
	}
	i := bytes.LastIndexByte(p, '/')
	if i <= 0 {
		return nil, KindInvalid, nil
	}
	head, ref := p[:i], p[i+1:]
	switch {
	case bytes.HasSuffix(head, segManifests):
		return head[:len(head)-len(segManifests)], KindManifest, ref
	case bytes.HasSuffix(head, segBlobs):
		return head[:len(head)-len(segBlobs)], KindBlob, ref
	case bytes.HasSuffix(head, segReferrers):
		return head[:len(head)-len(segReferrers)], KindReferrers, ref
	}
	return nil, KindInvalid, nil
}

// ValidName reports whether name is a repository name as the distribution spec defines it:
// path components of [a-z0-9]+ joined by '.', '_', '__' or runs of '-', separated by '/'.
func ValidName(name []byte) bool {
	if len(name) == 0 || len(name) > maxNameLength {
		return false
	}
	for len(name) > 0 {
		i := bytes.IndexByte(name, '/')
		comp := name
		if i >= 0 {
			comp, name = name[:i], name[i+1:]
			if len(name) == 0 {
				return false // trailing slash
			}
		} else {
			name = nil
		}
		if !validComponent(comp) {
			return false
		}
	}
	return true
}

// validComponent matches [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*.
func validComponent(c []byte) bool {
	if len(c) == 0 || !isAlnumLower(c[0]) || !isAlnumLower(c[len(c)-1]) {
		return false
	}
	for i := 1; i < len(c); i++ {
		b := c[i]
		if isAlnumLower(b) {
			continue
		}
		switch b {
		case '.':
			if !isAlnumLower(c[i+1]) {
				return false
			}
		case '_':
			if c[i+1] == '_' {
				i++
			}
			if !isAlnumLower(c[i+1]) {
				return false
			}
		case '-':
			for c[i+1] == '-' {
				i++
			}
		default:
			return false
		}
	}
	return true
}

// ValidTag reports whether ref is a tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
func ValidTag(ref []byte) bool {
	if len(ref) == 0 || len(ref) > maxTagLength || !isWord(ref[0]) {
		return false
	}
	for _, b := range ref[1:] {
		if !isWord(b) && b != '.' && b != '-' {
			return false
		}
	}
	return true
}

// IsDigest reports whether ref looks like a digest (algorithm:encoded) rather than a tag.
// Tags cannot contain ':', so the colon alone decides.
func IsDigest(ref []byte) bool { return bytes.IndexByte(ref, ':') >= 0 }

// ValidDigest reports whether d is a sha256 or sha512 digest with lowercase hex, the only
// algorithms registries use; anything else is refused before it reaches the upstream.
func ValidDigest(d []byte) bool {
	switch {
	case bytes.HasPrefix(d, []byte("sha256:")):
		return isLowerHex(d[len("sha256:"):], sha256HexLength)
	case bytes.HasPrefix(d, []byte("sha512:")):
		return isLowerHex(d[len("sha512:"):], sha512HexLength)
	}
	return false
}

// ValidReference reports whether ref is a valid tag or digest.
func ValidReference(ref []byte) bool {
	if IsDigest(ref) {
		return ValidDigest(ref)
	}
	return ValidTag(ref)
}

func isLowerHex(h []byte, n int) bool {
	if len(h) != n {
		return false
	}
	for _, b := range h {
		if (b < '0' || b > '9') && (b < 'a' || b > 'f') {
			return false
		}
	}
	return true
}

func isAlnumLower(b byte) bool { return (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') }

func isWord(b byte) bool {
	return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '_'
}
