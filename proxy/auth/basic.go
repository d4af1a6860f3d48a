package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// maxBasicLen bounds the base64 credentials ParseBasic decodes: enough for the longest user
// and password CheckBasic accepts, with room to spare.
const maxBasicLen = 1024

var b64Std = base64.StdEncoding.Strict()

// ParseBasic returns the user and password of an Authorization header value
// "Basic base64(user:password)" (RFC 7617). The scheme is case-insensitive; the user must be
// non-empty and the password, which may contain ':', may be empty. user and password share a
// newly allocated buffer owned by the caller, who may clear it after use. It never looks at
// the Authenticator's state, and works on a nil one.
func (a *Authenticator) ParseBasic(authorization []byte) (user, password []byte, ok bool) {
	enc, ok := cutScheme(authorization, "basic")
	if !ok || len(enc) > maxBasicLen {
		return nil, nil, false
	}
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(enc)))
	n, err := b64Std.Decode(buf, enc)
	if err != nil {
		return nil, nil, false
	}
	user, password, ok = bytes.Cut(buf[:n], []byte{':'})
	if !ok || len(user) == 0 {
		return nil, nil, false
	}
	return user, password, true
}

// CheckBasic reports whether password is user's. A success is cached for CacheTTL under a
// salted SHA-256 of the credentials, so repeating them costs a hash, not a bcrypt; failures are
// never cached and always cost one bcrypt, unknown users included. Passwords longer than 72
// bytes are refused (bcrypt would ignore the excess).
func (a *Authenticator) CheckBasic(user, password []byte) bool {
	if !a.Enabled() || len(user) == 0 || len(user) > MaxUserLen || len(password) > maxPasswordLen {
		return false
	}
	t := a.tab.Load()
	sum := a.cacheKey(user, password)
	now := time.Now().UnixNano()
	if t.cache.hit(&sum, now) {
		return true
	}
	acc, known := t.users[string(user)]
	hash := t.dummy
	if known {
		hash = acc.hash
	}
	if bcrypt.CompareHashAndPassword(hash, password) != nil || !known {
		return false
	}
	t.cache.add(&sum, now+int64(CacheTTL))
	return true
}

// cacheKey is sha256(salt, len(user), user, password). The length prefix keeps ("a", "b:c")
// and ("a:b", "c") apart; a \0 separator would too, but only as long as names can't hold \0.
func (a *Authenticator) cacheKey(user, password []byte) [sha256.Size]byte {
	var buf [len(a.salt) + 1 + MaxUserLen + maxPasswordLen]byte
	b := append(buf[:0], a.salt[:]...)
	b = append(b, byte(len(user)))
	b = append(b, user...)
	b = append(b, password...)
	sum := sha256.Sum256(b)
	clear(buf[:])
	return sum
}

// cacheSlots is the size of the success cache: a direct-mapped table indexed by the key's
// first bytes, so memory is fixed (about 40 KiB) and a collision merely costs a bcrypt.
const cacheSlots = 1024

type successCache struct {
	mu    sync.Mutex // protects slots
	slots [cacheSlots]cacheSlot
}

type cacheSlot struct {
	sum     [sha256.Size]byte
	expires int64 // Unix nanoseconds
}

func slotOf(sum *[sha256.Size]byte) int { return int(binary.LittleEndian.Uint16(sum[:]) % cacheSlots) }

func (c *successCache) hit(sum *[sha256.Size]byte, now int64) bool {
	c.mu.Lock()
	s := c.slots[slotOf(sum)]
	c.mu.Unlock()
	return now < s.expires && subtle.ConstantTimeCompare(s.sum[:], sum[:]) == 1
}

func (c *successCache) add(sum *[sha256.Size]byte, expires int64) {
	c.mu.Lock()
	c.slots[slotOf(sum)] = cacheSlot{sum: *sum, expires: expires}
	c.mu.Unlock()
}

// cutScheme returns the credentials after an auth scheme (case-insensitive) and at least one
// space, with surrounding spaces trimmed. See https://www.rfc-editor.org/rfc/rfc9110#section-11.4
func cutScheme(h []byte, scheme string) ([]byte, bool) {
	if len(h) <= len(scheme) || h[len(scheme)] != ' ' {
		return nil, false
	}
	for i := 0; i < len(scheme); i++ {
		if h[i]|0x20 != scheme[i] { // scheme is lower case letters
			return nil, false
		}
	}
	rest := bytes.Trim(h[len(scheme):], " ")
	return rest, len(rest) > 0
}
