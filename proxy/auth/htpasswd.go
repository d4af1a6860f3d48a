package auth

import (
	"bytes"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// accountError is a bad account line or entry. Its message names the user, never the hash or
// the rest of the line; the caller adds where it was and wraps sentinel.
type accountError struct {
	sentinel error // ErrInvalidConfig or ErrUnsupportedHash
	msg      string
}

func (e *accountError) Error() string { return e.msg }

func (e *accountError) at(where string) error {
	return fmt.Errorf("%w: %s: %s", e.sentinel, where, e.msg)
}

// parseHtpasswd returns the accounts of an htpasswd file and the line number of each.
func parseHtpasswd(data []byte) (accs []account, lines []int, lineNo int, aerr *accountError) {
	for n := 1; len(data) > 0; n++ {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		line = bytes.TrimSpace(line) // also drops the \r of CRLF files
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		name, hash, ok := bytes.Cut(line, []byte{':'})
		if !ok || len(name) == 0 {
			return nil, nil, n, &accountError{ErrInvalidConfig, `want "user:bcrypt-hash" as written by htpasswd -B`}
		}
		acc, aerr := parseAccount(string(name), string(hash))
		if aerr != nil {
			return nil, nil, n, aerr
		}
		accs = append(accs, acc)
		lines = append(lines, n)
	}
	return accs, lines, 0, nil
}

// parseAccount checks a user name and its bcrypt hash.
func parseAccount(name, hash string) (account, *accountError) {
	if msg := checkName(name); msg != "" {
		return account{}, &accountError{ErrInvalidConfig, msg}
	}
	if kind := hashKind(hash); kind != "" {
		return account{}, &accountError{ErrUnsupportedHash, fmt.Sprintf(
			"user %q has %s hash; only bcrypt ($2y$, $2a$, $2b$) is accepted, create it with htpasswd -B", name, kind)}
	}
	if _, err := bcrypt.Cost([]byte(hash)); err != nil {
		return account{}, &accountError{ErrUnsupportedHash, fmt.Sprintf("user %q has a malformed bcrypt hash", name)}
	}
	return account{name: []byte(name), hash: []byte(hash)}, nil
}

// checkName returns why name cannot be a user name, or "".
func checkName(name string) string {
	if name == "" {
		return "empty user name"
	}
	if len(name) > MaxUserLen {
		return fmt.Sprintf("user name longer than %d bytes", MaxUserLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f || c == ':' {
			return fmt.Sprintf("user name %q has a control character or ':'", name)
		}
	}
	return ""
}

// hashKind returns "" for a bcrypt hash, else the scheme with its article, for the message.
func hashKind(h string) string {
	for _, p := range []string{"$2y$", "$2a$", "$2b$"} {
		if strings.HasPrefix(h, p) {
			return ""
		}
	}
	switch {
	case h == "":
		return "an empty"
	case strings.HasPrefix(h, "$apr1$"):
		return "an Apache MD5 ($apr1$)"
	case strings.HasPrefix(h, "{SHA}"):
		return "a SHA-1 ({SHA})"
	case strings.HasPrefix(h, "$1$"):
		return "an MD5-crypt ($1$)"
	case strings.HasPrefix(h, "$5$"):
		return "a SHA-256-crypt ($5$)"
	case strings.HasPrefix(h, "$6$"):
		return "a SHA-512-crypt ($6$)"
	case strings.HasPrefix(h, "$2x$"):
		return "a buggy-bcrypt ($2x$)"
	case strings.HasPrefix(h, "$argon2"):
		return "an Argon2"
	case strings.HasPrefix(h, "$"):
		return "an unknown"
	}
	return "a crypt(3) DES or plain-text"
}
