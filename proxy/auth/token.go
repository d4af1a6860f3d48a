package auth

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"time"
)

// A token is base64url(payload) "." base64url(HMAC-SHA256(key, payload)), both unpadded, with
// payload = version byte | expiry (Unix seconds, 8 bytes big-endian) | user name.
const (
	tokenVersion = 1
	headerLen    = 1 + 8
	maxPayload   = headerLen + MaxUserLen
	sigLen64     = 43 // base64 of 32 bytes, unpadded
)

// b64 refuses non-canonical encodings, so each payload has exactly one token spelling.
var b64 = base64.RawURLEncoding.Strict()

var maxPayload64 = b64.EncodedLen(maxPayload)

// IssueToken returns a mirror token for user valid from now for the configured TokenTTL, and
// that TTL in seconds for the token response's expires_in. user must be a mirror account that
// passed CheckBasic: a token only verifies while its user exists. It panics if user is longer
// than MaxUserLen, which CheckBasic never accepts.
func (a *Authenticator) IssueToken(user string, now time.Time) (token string, expiresIn int) {
	if len(user) > MaxUserLen {
		panic(fmt.Sprintf("BUG: user name of %d bytes; CheckBasic accepts at most %d", len(user), MaxUserLen))
	}
	st := a.getMAC()
	p := st.payload[:headerLen+len(user)]
	p[0] = tokenVersion
	binary.BigEndian.PutUint64(p[1:], uint64(now.Unix()+a.ttl))
	copy(p[headerLen:], user)
	st.h.Reset()
	st.h.Write(p)
	sig := st.h.Sum(st.sum[:0])
	buf := make([]byte, 0, b64.EncodedLen(len(p))+1+sigLen64)
	buf = b64.AppendEncode(buf, p)
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, sig)
	a.putMAC(st)
	return string(buf), int(a.ttl)
}

// VerifyBearer checks an Authorization header value "Bearer <token>" holding a mirror token:
// the HMAC (compared in constant time), the expiry against now, and that the user still
// exists. On success it returns the user name, which is owned by the Authenticator and must not
// be modified. It does not allocate.
func (a *Authenticator) VerifyBearer(authorization []byte, now time.Time) (user []byte, ok bool) {
	if a == nil {
		return nil, false
	}
	tok, ok := cutScheme(authorization, "bearer")
	if !ok {
		return nil, false
	}
	n := len(tok) - sigLen64 - 1
	if n <= 0 || n > maxPayload64 || tok[n] != '.' {
		return nil, false
	}
	st := a.getMAC()
	defer a.putMAC(st)
	pn, err := b64.Decode(st.payload[:], tok[:n])
	if err != nil || pn < headerLen || st.payload[0] != tokenVersion {
		return nil, false
	}
	if sn, err := b64.Decode(st.sig[:], tok[n+1:]); err != nil || sn != len(st.sig) {
		return nil, false
	}
	p := st.payload[:pn]
	st.h.Reset()
	st.h.Write(p)
	if !hmac.Equal(st.h.Sum(st.sum[:0]), st.sig[:]) {
		return nil, false
	}
	if now.Unix() >= int64(binary.BigEndian.Uint64(p[1:headerLen])) {
		return nil, false
	}
	t := a.tab.Load()
	if t == nil {
		return nil, false
	}
	acc, ok := t.users[string(p[headerLen:])]
	if !ok {
		return nil, false
	}
	return acc.name, true
}
