// Package auth checks mirror accounts (htpasswd bcrypt or inline) and issues and verifies the
// mirror's own short-lived HMAC bearer tokens.
package auth
