package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Test users of the token server. alice may do anything, bob may pull everything including
// private/*, anonymous may pull everything except private/*.
const (
	aliceUser, alicePass = "alice", "secret"
	bobUser, bobPass     = "bob", "bobpw"
	privatePrefix        = "private/"
	tokenLifetime        = 300 * time.Second
	tokenService         = "e2e-registry"
	tokenIssuer          = "e2e-token-issuer"
)

var testUsers = map[string]string{aliceUser: alicePass, bobUser: bobPass}

// tokenServer is a Docker-Hub-like token server (https://distribution.github.io/distribution/spec/auth/token/)
// that signs ES256 JWTs by hand and records who asked.
type tokenServer struct {
	URL        string // http://localhost:PORT/token, the realm
	CertBundle string // PEM file of the signing certificate, for Distribution's rootcertbundle

	srv     *http.Server
	key     *ecdsa.PrivateKey
	certDER []byte

	mu      sync.Mutex // protects reqs, refresh
	reqs    []tokenRequest
	refresh map[string]string // refresh token -> user
}

// tokenRequest is one request the token server answered.
type tokenRequest struct {
	Method    string
	Grant     string // "", "password" or "refresh_token"
	User      string // authenticated user, "" for anonymous
	Scopes    []string
	Status    int
	Peer      peer
	Requested time.Time
}

func startTokenServer(dir string) (*tokenServer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "e2e token signer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	bundle := dir + "/token-signer.pem"
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ts := &tokenServer{
		// A host name, not an IP literal: go-containerregistry refuses loopback IP realms.
		URL:        fmt.Sprintf("http://localhost:%d/token", ln.Addr().(*net.TCPAddr).Port),
		CertBundle: bundle,
		key:        key,
		certDER:    der,
		refresh:    map[string]string{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", ts.serveToken)
	ts.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go ts.srv.Serve(ln)
	return ts, nil
}

func (ts *tokenServer) Close() { ts.srv.Close() }

// Mark returns a position in the request log for Since.
func (ts *tokenServer) Mark() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.reqs)
}

// Since returns the requests recorded after mark.
func (ts *tokenServer) Since(mark int) []tokenRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]tokenRequest(nil), ts.reqs[mark:]...)
}

type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

func (ts *tokenServer) serveToken(w http.ResponseWriter, r *http.Request) {
	rec := tokenRequest{Method: r.Method, Peer: peerOf(r), Requested: time.Now()}
	status := ts.answer(w, r, &rec)
	rec.Status = status
	ts.mu.Lock()
	ts.reqs = append(ts.reqs, rec)
	ts.mu.Unlock()
}

// answer writes the response and returns its status.
func (ts *tokenServer) answer(w http.ResponseWriter, r *http.Request, rec *tokenRequest) int {
	var (
		user    string
		offline bool
		err     error
	)
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		if q.Get("service") != "" && q.Get("service") != tokenService {
			return ts.fail(w, http.StatusBadRequest, "unknown service "+q.Get("service"))
		}
		rec.Scopes = splitScopes(q["scope"])
		offline = q.Get("offline_token") == "true"
		if user, err = basicUser(r); err != nil {
			return ts.unauthorized(w, err)
		}
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			return ts.fail(w, http.StatusBadRequest, err.Error())
		}
		f := r.PostForm
		rec.Grant = f.Get("grant_type")
		rec.Scopes = splitScopes(f["scope"])
		offline = f.Get("access_type") == "offline"
		switch rec.Grant {
		case "password":
			u, p := f.Get("username"), f.Get("password")
			if pw, ok := testUsers[u]; !ok || pw != p {
				return ts.unauthorized(w, errors.New("bad username or password"))
			}
			user = u
		case "refresh_token":
			ts.mu.Lock()
			u, ok := ts.refresh[f.Get("refresh_token")]
			ts.mu.Unlock()
			if !ok {
				return ts.unauthorized(w, errors.New("unknown refresh token"))
			}
			user = u
		default:
			return ts.fail(w, http.StatusBadRequest, "unsupported grant_type "+rec.Grant)
		}
	default:
		return ts.fail(w, http.StatusMethodNotAllowed, "GET or POST")
	}
	rec.User = user
	tok, err := ts.sign(user, grantAccess(user, rec.Scopes))
	if err != nil {
		return ts.fail(w, http.StatusInternalServerError, err.Error())
	}
	resp := tokenResponse{
		Token:       tok,
		AccessToken: tok,
		ExpiresIn:   int(tokenLifetime / time.Second),
		IssuedAt:    time.Now().UTC().Format(time.RFC3339),
		Scope:       strings.Join(rec.Scopes, " "),
	}
	if offline && user != "" {
		resp.RefreshToken = randomHex(16)
		ts.mu.Lock()
		ts.refresh[resp.RefreshToken] = user
		ts.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	json.NewEncoder(w).Encode(resp)
	return http.StatusOK
}

func (ts *tokenServer) fail(w http.ResponseWriter, status int, msg string) int {
	http.Error(w, msg, status)
	return status
}

func (ts *tokenServer) unauthorized(w http.ResponseWriter, err error) int {
	w.Header().Set("WWW-Authenticate", `Basic realm="e2e token server"`)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprintf(w, `{"details":%q}`, err.Error())
	return http.StatusUnauthorized
}

// basicUser returns the Basic-auth user, "" for anonymous (no header, or empty credentials as on
// Docker Hub), or an error for bad credentials.
func basicUser(r *http.Request) (string, error) {
	u, p, ok := r.BasicAuth()
	if !ok {
		if r.Header.Get("Authorization") != "" {
			return "", errors.New("unsupported Authorization header")
		}
		return "", nil
	}
	if u == "" && p == "" {
		return "", nil
	}
	if pw, known := testUsers[u]; !known || pw != p {
		return "", errors.New("bad username or password")
	}
	return u, nil
}

// splitScopes flattens scope parameters, each of which may hold several space-separated scopes.
func splitScopes(vals []string) []string {
	var out []string
	for _, v := range vals {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

type accessEntry struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// grantAccess applies the test policy to the requested scopes (type:name:actions).
func grantAccess(user string, scopes []string) []accessEntry {
	out := []accessEntry{}
	for _, s := range scopes {
		i, j := strings.IndexByte(s, ':'), strings.LastIndexByte(s, ':')
		if i < 0 || j <= i {
			continue
		}
		typ, name, actions := s[:i], s[i+1:j], strings.Split(s[j+1:], ",")
		var granted []string
		for _, a := range actions {
			if allowed(user, typ, name, a) {
				granted = append(granted, a)
			}
		}
		if len(granted) > 0 {
			out = append(out, accessEntry{Type: typ, Name: name, Actions: granted})
		}
	}
	return out
}

func allowed(user, typ, name, action string) bool {
	switch user {
	case aliceUser:
		return true
	case bobUser:
		return typ == "repository" && action == "pull"
	default:
		return typ == "repository" && action == "pull" && !strings.HasPrefix(name, privatePrefix)
	}
}

// sign builds an ES256 JWT whose header carries the signing certificate in x5c.
func (ts *tokenServer) sign(user string, access []accessEntry) (string, error) {
	now := time.Now()
	header := map[string]any{
		"alg": "ES256",
		"typ": "JWT",
		"x5c": []string{base64.StdEncoding.EncodeToString(ts.certDER)},
	}
	claims := map[string]any{
		"iss":    tokenIssuer,
		"sub":    user,
		"aud":    tokenService,
		"exp":    now.Add(tokenLifetime).Unix(),
		"nbf":    now.Add(-10 * time.Second).Unix(),
		"iat":    now.Unix(),
		"jti":    randomHex(16),
		"access": access,
	}
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	sum := sha256.Sum256([]byte(signing))
	rr, ss, err := ecdsa.Sign(rand.Reader, ts.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64) // JWS ES256: R || S, 32 bytes each (RFC 7518 §3.4)
	rr.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
