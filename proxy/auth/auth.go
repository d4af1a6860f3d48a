package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

var (
	// ErrInvalidConfig is returned by New for a bad Config field. The returned error wraps it
	// and names the field, never a password, hash or secret.
	ErrInvalidConfig = errors.New("auth: invalid config")

	// ErrUnsupportedHash is returned by New and Reload for an account whose password hash is not
	// bcrypt. The returned error wraps it and names the file and line (or Users entry), the
	// user and the hash type, never the hash.
	ErrUnsupportedHash = errors.New("auth: unsupported password hash")
)

const (
	// DefaultTokenTTL is the lifetime of a mirror token when Config.TokenTTL is 0.
	DefaultTokenTTL = 5 * time.Minute

	// MinTokenTTL is the shortest Config.TokenTTL accepted: clients assume at least 60 seconds.
	// See https://distribution.github.io/distribution/spec/auth/token/#token-response-fields
	MinTokenTTL = time.Minute

	// CacheTTL is how long a successful Basic check is remembered, so that a client repeating
	// its Basic credentials costs one bcrypt per CacheTTL, not one per request.
	CacheTTL = time.Minute

	// MaxUserLen is the longest user name accepted, in bytes.
	MaxUserLen = 255

	// MinSecretLen is the shortest Config.TokenSecret accepted, in bytes.
	MinSecretLen = 16

	// maxPasswordLen is bcrypt's limit: it ignores bytes past 72, so longer passwords are
	// refused rather than matched on a prefix (bcrypt.GenerateFromPassword refuses them too).
	maxPasswordLen = 72
)

// Config configures mirror accounts. Auth is enabled when HtpasswdFile or Users is set.
type Config struct {
	// HtpasswdFile is an Apache htpasswd file of "user:hash" lines, as written by
	// "htpasswd -B". Only bcrypt hashes ($2y$, $2a$, $2b$) are accepted; blank lines and lines
	// starting with # are skipped. Reload re-reads it. Empty means none.
	HtpasswdFile string

	// Users are accounts given inline, added to those of HtpasswdFile. A name may appear once.
	Users []User

	// TokenSecret is the HMAC-SHA256 key for mirror tokens, at least MinSecretLen bytes. Empty
	// means a random key per process: tokens then stop working on restart and are not accepted
	// by other replicas, so set it when several replicas serve one name.
	TokenSecret string

	// TokenTTL is how long a mirror token is valid, at least MinTokenTTL. 0 means
	// DefaultTokenTTL.
	TokenTTL time.Duration
}

// User is a mirror account.
type User struct {
	Name         string
	PasswordHash string // bcrypt, e.g. from "htpasswd -nbB user password"
}

// Authenticator checks mirror credentials and tokens. It is safe for concurrent use. A nil or
// disabled Authenticator authorizes everything (see Authorize) and verifies no token.
type Authenticator struct {
	enabled bool
	file    string
	inline  []account
	ttl     int64 // seconds
	key     []byte
	salt    [32]byte // prefix of the Basic cache key, so the cache holds no plain sha256 of a password

	macs sync.Pool // *macState

	reloadMu sync.Mutex // serializes Reload
	tab      atomic.Pointer[table]
}

// table is one generation of accounts. Reload replaces it whole, cache included, so a changed
// password or removed user takes effect at once, for Basic credentials and tokens alike.
type table struct {
	users map[string]account
	dummy []byte // hash compared against for unknown users, so they cost as much as known ones
	cache successCache
}

type account struct {
	name []byte // returned by VerifyBearer; never modified
	hash []byte
}

// macState is the pooled scratch space of token signing and verification.
type macState struct {
	h       hash.Hash
	payload [maxPayload]byte
	sig     [sha256.Size]byte
	sum     [sha256.Size]byte
}

// New checks cfg, loads the accounts and returns an Authenticator. Errors wrap
// ErrInvalidConfig or ErrUnsupportedHash, or are file errors from reading HtpasswdFile.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{
		enabled: cfg.HtpasswdFile != "" || len(cfg.Users) > 0,
		file:    cfg.HtpasswdFile,
	}
	ttl := cfg.TokenTTL
	switch {
	case ttl == 0:
		ttl = DefaultTokenTTL
	case ttl < MinTokenTTL:
		return nil, fmt.Errorf("%w: token TTL must be at least %s (clients assume 60s); got %s", ErrInvalidConfig, MinTokenTTL, ttl)
	}
	a.ttl = int64(ttl / time.Second)
	switch {
	case cfg.TokenSecret == "":
		a.key = make([]byte, 32)
		rand.Read(a.key)
	case len(cfg.TokenSecret) < MinSecretLen:
		return nil, fmt.Errorf("%w: token secret must be at least %d bytes; got %d", ErrInvalidConfig, MinSecretLen, len(cfg.TokenSecret))
	default:
		a.key = []byte(cfg.TokenSecret)
	}
	rand.Read(a.salt[:])
	a.macs.New = func() any { return &macState{h: hmac.New(sha256.New, a.key)} }

	for i, u := range cfg.Users {
		acc, aerr := parseAccount(u.Name, u.PasswordHash)
		if aerr != nil {
			return nil, aerr.at(fmt.Sprintf("users[%d]", i))
		}
		a.inline = append(a.inline, acc)
	}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Enabled reports whether mirror accounts are configured. When false, Authorize lets every
// request through and the handler should not challenge clients.
func (a *Authenticator) Enabled() bool { return a != nil && a.enabled }

// Reload re-reads HtpasswdFile and swaps in the new accounts atomically, forgetting cached
// Basic successes. Tokens of users who are gone stop verifying. On error the previous accounts
// stay in force. Call it on SIGHUP.
func (a *Authenticator) Reload() error {
	if !a.Enabled() {
		return nil
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	users := make(map[string]account, len(a.inline))
	where := make(map[string]string)
	add := func(acc account, at string) error {
		name := string(acc.name)
		if prev, ok := where[name]; ok {
			return fmt.Errorf("%w: user %q defined twice (%s and %s)", ErrInvalidConfig, name, prev, at)
		}
		where[name] = at
		users[name] = acc
		return nil
	}
	for i, acc := range a.inline {
		if err := add(acc, fmt.Sprintf("users[%d]", i)); err != nil {
			return err
		}
	}
	if a.file != "" {
		data, err := os.ReadFile(a.file)
		if err != nil {
			return fmt.Errorf("auth: cannot read htpasswd file: %w", err)
		}
		accs, lines, bad, aerr := parseHtpasswd(data)
		if aerr != nil {
			return aerr.at(fmt.Sprintf("%s line %d", a.file, bad))
		}
		for i, acc := range accs {
			if err := add(acc, fmt.Sprintf("%s line %d", a.file, lines[i])); err != nil {
				return err
			}
		}
	}
	t := &table{users: users}
	// Unknown users are compared against a hash as costly as the dearest real one, so that
	// response times don't tell which names exist.
	cost := bcrypt.MinCost
	for _, acc := range users {
		if c, err := bcrypt.Cost(acc.hash); err == nil {
			cost = max(cost, c)
		}
	}
	var pw [16]byte
	rand.Read(pw[:])
	dummy, err := bcrypt.GenerateFromPassword(pw[:], cost)
	if err != nil {
		return fmt.Errorf("BUG: cannot generate a bcrypt hash: %w", err)
	}
	t.dummy = dummy
	a.tab.Store(t)
	return nil
}

// Authorize reports whether authorization (the Authorization header value) carries a valid
// mirror token ("Bearer ...") or valid mirror credentials ("Basic ..."). It returns true when
// the Authenticator is not Enabled. A mirror token must never be forwarded upstream.
func (a *Authenticator) Authorize(authorization []byte, now time.Time) bool {
	if !a.Enabled() {
		return true
	}
	if _, ok := cutScheme(authorization, "bearer"); ok {
		_, ok := a.VerifyBearer(authorization, now)
		return ok
	}
	user, password, ok := a.ParseBasic(authorization)
	if !ok {
		return false
	}
	ok = a.CheckBasic(user, password)
	clear(password)
	return ok
}

func (a *Authenticator) getMAC() *macState { return a.macs.Get().(*macState) }

func (a *Authenticator) putMAC(st *macState) {
	clear(st.payload[:])
	a.macs.Put(st)
}
