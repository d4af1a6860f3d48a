package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Defaults used when a key is absent from the file.
const (
	DefaultListen           = ":5000"
	DefaultUpstreamTimeout  = 30 * time.Second
	DefaultIdleTimeout      = 90 * time.Second
	DefaultReadTimeout      = 30 * time.Second
	DefaultShutdownTimeout  = 30 * time.Second
	DefaultIPv6Prefix       = 64
	DefaultMaxConnsPerHost  = 512
	DefaultMaxRedirects     = 5
	DefaultDockerHubName    = "docker.io"
	DefaultDockerHubURL     = "https://registry-1.docker.io"
	DefaultCacheDir         = "docxy-cache"
	DefaultCacheMaxSize     = 20 << 30
	DefaultManifestTTL      = 5 * time.Minute
	DefaultLogLevel         = "info"
	DefaultLogFormat        = "text"
	DefaultTokenTTL         = 5 * time.Minute
	DefaultS3Region         = "us-east-1"
	DefaultS3Prefix         = "docxy/"
	DefaultACMECacheDir     = "docxy-acme"
	DefaultACMEDirectoryURL = "https://acme-v02.api.letsencrypt.org/directory"
	envConfig               = "DOCXY_CONFIG"
	envCertPath             = "DOCXY_CERT_PATH"
	envKeyPath              = "DOCXY_KEY_PATH"
	maxRegistryNameLength   = 64
	defaultHTTPSPort        = "443"
	defaultHTTPPort         = "80"
)

// Config is the whole configuration file.
type Config struct {
	Server     Server     `toml:"server"`
	TLS        TLS        `toml:"tls"`
	Cache      Cache      `toml:"cache"`
	Log        Log        `toml:"log"`
	Admin      Admin      `toml:"admin"`
	Limits     Limits     `toml:"limits"`
	Auth       Auth       `toml:"auth"`
	Registries []Registry `toml:"registry"`
}

// Limits protect a public mirror from abuse. Every limit is per client IP and off when zero.
// Over a limit a client gets 429 TOOMANYREQUESTS with Retry-After.
type Limits struct {
	// RequestsPerSecond refills each client's token bucket; Burst is its size (default 2x rate).
	RequestsPerSecond float64 `toml:"requests_per_second"`
	Burst             int     `toml:"burst"`
	// MaxBlobsPerIP caps a client's concurrent blob downloads.
	MaxBlobsPerIP int `toml:"max_blobs_per_ip"`
	// DailyBytesPerIP caps the bytes a client may download per UTC day, e.g. "50GiB".
	DailyBytesPerIP Size `toml:"daily_bytes_per_ip"`
	// MaxConnsPerIP caps a client's open connections (per address, also for IPv6).
	MaxConnsPerIP int `toml:"max_conns_per_ip"`
	// IPv6Prefix is the prefix length under which IPv6 addresses count as one client for the
	// rate, blob and byte limits (default 64: one subscriber's allocation; 128: every address).
	IPv6Prefix int `toml:"ipv6_prefix"`
	// TrustedProxies are the peers (IPs or CIDRs) whose X-Forwarded-For names the client.
	TrustedProxies []string `toml:"trusted_proxies"`
}

// Auth turns on mirror accounts: clients must `docker login` to the mirror with one of these
// users, the mirror issues its own short-lived tokens, and upstream it uses its own configured
// accounts ([[registry]] username/password and accounts). Off unless users are configured.
type Auth struct {
	// HtpasswdFile holds "user:bcrypt-hash" lines (htpasswd -B). Re-read on SIGHUP.
	HtpasswdFile string `toml:"htpasswd_file"`
	// Users are inline accounts: [[auth.users]] name = "...", password_hash = "$2y$..." (bcrypt).
	Users []AuthUser `toml:"users"`
	// TokenSecret signs the mirror's tokens (16+ bytes). Empty: random per process, so tokens do not
	// survive a restart or work across replicas — set it when running several.
	TokenSecret string `toml:"token_secret"`
	// TokenTTL is how long a mirror token is valid. Default 5m.
	TokenTTL Duration `toml:"token_ttl"`
}

// AuthUser is one mirror account.
type AuthUser struct {
	Name         string `toml:"name"`
	PasswordHash string `toml:"password_hash"`
}

// Enabled reports whether mirror accounts are configured.
func (a *Auth) Enabled() bool { return a.HtpasswdFile != "" || len(a.Users) > 0 }

// Account is an upstream account of the mirror's own.
type Account struct {
	Username string `toml:"username"`
	Password string `toml:"password"`
}

// Admin configures the operator endpoints under /admin/ (cache stats and purge).
type Admin struct {
	// Token enables /admin/ for requests with "Authorization: Bearer <token>". Empty (the
	// default) turns the endpoints off: they answer 404.
	Token string `toml:"token"`
}

// Server configures the listeners and what clients are told about them.
type Server struct {
	// Listen is the plain-HTTP address. Default ":5000". Empty string disables it when TLSListen is set.
	Listen string `toml:"listen"`
	// TLSListen is the HTTPS address, e.g. ":443". Off when empty (the default).
	TLSListen string `toml:"tls_listen"`
	// PublicBaseURL is the scheme://host[:port] that clients use to reach the mirror.
	// The token realm and redirects are built from it, never from an arbitrary Host header.
	// Default: derived from the listeners, http://localhost:PORT.
	PublicBaseURL string `toml:"public_base_url"`
	// BehindProxy trusts X-Forwarded-Proto/X-Forwarded-For from the peer. Default false.
	BehindProxy bool `toml:"behind_proxy"`
	// ReadTimeout bounds reading a client's request (headers and the small bodies docxy accepts). Default 30s.
	ReadTimeout Duration `toml:"read_timeout"`
	// IdleTimeout closes keep-alive connections idle that long. Default 90s.
	IdleTimeout Duration `toml:"idle_timeout"`
	// UpstreamTimeout bounds connecting to an upstream and each wait for upstream bytes (a progress
	// timeout, not a whole-body deadline: a 5 GiB layer on a slow link still finishes). Default 30s.
	UpstreamTimeout Duration `toml:"upstream_timeout"`
	// ShutdownTimeout is how long running transfers may finish after SIGTERM. Default 30s.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// MaxConnsPerHost caps pooled connections to one upstream host. Default 512.
	MaxConnsPerHost int `toml:"max_conns_per_host"`
	// UpstreamIPVersion picks the address family for upstream connections: 0 tries both (IPv6
	// first where the system prefers it, IPv4 after 300 ms), 4 or 6 only that one. For hosts
	// whose IPv6 route is broken, or to choose which address Docker Hub rate-limits.
	UpstreamIPVersion int `toml:"upstream_ip_version"`

	publicBaseURLDerived bool
}

// TLS configures the certificate served on Server.TLSListen.
// DOCXY_CERT_PATH and DOCXY_KEY_PATH override CertFile and KeyFile.
// The files are re-read when they change on disk (checked every minute) and on SIGHUP.
type TLS struct {
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// ACME obtains and renews certificates by itself instead of cert_file/key_file.
	ACME ACME `toml:"acme"`
}

// ACME configures automatic certificates (Let's Encrypt or any RFC 8555 CA) by TLS-ALPN-01 on
// tls_listen, or HTTP-01 on listen (which must then be reachable on port 80).
type ACME struct {
	// Email is the account contact the CA writes to about expiring certificates.
	Email string `toml:"email"`
	// Domains are the names to get certificates for; ACME is off when empty.
	Domains []string `toml:"domains"`
	// CacheDir keeps the account key and certificates across restarts. Default "docxy-acme".
	CacheDir string `toml:"cache_dir"`
	// DirectoryURL is the CA's directory. Default Let's Encrypt production.
	DirectoryURL string `toml:"directory_url"`
	// CARootFile is a PEM bundle to trust for the CA's own HTTPS endpoint (a test CA such as Pebble).
	CARootFile string `toml:"ca_root_file"`
}

// Enabled reports whether ACME is configured.
func (a *ACME) Enabled() bool { return len(a.Domains) > 0 }

// Cache configures the local content-addressed cache.
type Cache struct {
	// Disabled turns the cache off: every request goes upstream. Default false.
	Disabled bool `toml:"disabled"`
	// Dir holds cached blobs. Default "docxy-cache" (relative to the working directory).
	Dir string `toml:"dir"`
	// MaxSize caps the bytes kept on disk, e.g. "20GiB". Default 20GiB.
	MaxSize Size `toml:"max_size"`
	// ManifestTTL is how long a manifest fetched by tag is served before it is revalidated
	// upstream with a HEAD. Manifests by digest never expire. Default 5m.
	ManifestTTL Duration `toml:"manifest_ttl"`
	// S3 adds a cache tier shared by several replicas on S3-compatible storage.
	S3 S3 `toml:"s3"`
}

// S3 configures the shared cache tier. Each replica keeps its own disk cache (cache.dir); on a
// local miss it looks in the bucket before going upstream, and what it downloads from upstream it
// uploads to the bucket. Off unless bucket is set.
type S3 struct {
	// Endpoint is host[:port], e.g. "s3.amazonaws.com", "<account>.r2.cloudflarestorage.com".
	Endpoint string `toml:"endpoint"`
	Bucket   string `toml:"bucket"`
	// Region defaults to us-east-1.
	Region string `toml:"region"`
	// AccessKey and SecretKey; empty means the environment (AWS_ACCESS_KEY_ID, ...).
	AccessKey string `toml:"access_key"`
	SecretKey string `toml:"secret_key"`
	// Prefix is prepended to every object key. Default "docxy/".
	Prefix string `toml:"prefix"`
	// Insecure uses plain HTTP to the endpoint.
	Insecure bool `toml:"insecure"`
	// PathStyle addresses the bucket in the path (MinIO, Ceph, versitygw) rather than the host name.
	PathStyle bool `toml:"path_style"`
}

// Enabled reports whether the shared tier is configured.
func (s *S3) Enabled() bool { return s.Bucket != "" }

// Log configures logging.
type Log struct {
	// Level is one of debug, info, warn, error. Default info.
	Level string `toml:"level"`
	// Format is text or json. Default text.
	Format string `toml:"format"`
	// AccessLog writes one line per request. Default true.
	AccessLog *bool `toml:"access_log"`
}

// Registry is one upstream registry served by the mirror.
type Registry struct {
	// Name identifies the registry in logs and metrics, e.g. "docker.io".
	Name string `toml:"name"`
	// Upstream is the registry's base URL, e.g. "https://registry-1.docker.io".
	Upstream string `toml:"upstream"`
	// Hosts are the host names under which the mirror serves this registry (matched against Host).
	Hosts []string `toml:"hosts"`
	// LibraryPrefix maps single-component names to library/NAME, as Docker Hub needs.
	LibraryPrefix bool `toml:"library_prefix"`
	// Default selects this registry when neither Host nor containerd's ?ns= does.
	Default bool `toml:"default"`
	// Username and Password are the mirror's own upstream account, used when the client sends none.
	Username string `toml:"username"`
	Password string `toml:"password"`
	// Accounts are more upstream accounts of the mirror's own, used in turn with username/password
	// so that one account's rate limit is not the mirror's: [[registry.accounts]] username, password.
	Accounts []Account `toml:"accounts"`
	// Allow and Deny are repository patterns checked before any upstream call ("library/*" matches
	// one segment, "myorg/**" any depth), against the upstream name (with library/ added). A name
	// matching a deny pattern, or no allow pattern when allow is set, gets 403 DENIED.
	Allow []string `toml:"allow"`
	Deny  []string `toml:"deny"`
	// TokenRealm and TokenService override what the upstream's /v2/ challenge says.
	TokenRealm   string `toml:"token_realm"`
	TokenService string `toml:"token_service"`
}

// Default returns the built-in configuration: plain HTTP on :5000 mirroring Docker Hub.
func Default() *Config {
	c := &Config{}
	c.applyDefaults()
	return c
}

// Load reads the TOML file at path, applies defaults and environment overrides, and validates it.
// Unknown keys are an error, so that a typo never silently turns a setting off.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	return Parse(data, path)
}

// Parse is Load for configuration already in memory; name is used in error messages.
func Parse(data []byte, name string) (*Config, error) {
	c := &Config{}
	md, err := toml.Decode(string(data), c)
	if err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", name, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%s: unknown key %s; see config.toml.example for the valid keys", name, strings.Join(keys, ", "))
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// ConfigPathFromEnv returns DOCXY_CONFIG, the config path used when -config is not given.
func ConfigPathFromEnv() string { return os.Getenv(envConfig) }

func (c *Config) applyDefaults() {
	s := &c.Server
	if s.Listen == "" && s.TLSListen == "" {
		s.Listen = DefaultListen
	}
	setDuration(&s.ReadTimeout, DefaultReadTimeout)
	setDuration(&s.IdleTimeout, DefaultIdleTimeout)
	setDuration(&s.UpstreamTimeout, DefaultUpstreamTimeout)
	setDuration(&s.ShutdownTimeout, DefaultShutdownTimeout)
	if s.MaxConnsPerHost == 0 {
		s.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
	if c.Limits.IPv6Prefix == 0 {
		c.Limits.IPv6Prefix = DefaultIPv6Prefix
	}
	if v := os.Getenv(envCertPath); v != "" {
		c.TLS.CertFile = v
	}
	if v := os.Getenv(envKeyPath); v != "" {
		c.TLS.KeyFile = v
	}
	if c.TLS.ACME.Enabled() {
		if c.TLS.ACME.CacheDir == "" {
			c.TLS.ACME.CacheDir = DefaultACMECacheDir
		}
		if c.TLS.ACME.DirectoryURL == "" {
			c.TLS.ACME.DirectoryURL = DefaultACMEDirectoryURL
		}
	}
	if c.Cache.Dir == "" {
		c.Cache.Dir = DefaultCacheDir
	}
	if c.Cache.MaxSize == 0 {
		c.Cache.MaxSize = DefaultCacheMaxSize
	}
	setDuration(&c.Cache.ManifestTTL, DefaultManifestTTL)
	if c.Cache.S3.Region == "" {
		c.Cache.S3.Region = DefaultS3Region
	}
	if c.Cache.S3.Prefix == "" {
		c.Cache.S3.Prefix = DefaultS3Prefix
	}
	if c.Auth.Enabled() && c.Auth.TokenTTL.Duration == 0 {
		c.Auth.TokenTTL.Duration = DefaultTokenTTL
	}
	if c.Log.Level == "" {
		c.Log.Level = DefaultLogLevel
	}
	if c.Log.Format == "" {
		c.Log.Format = DefaultLogFormat
	}
	if c.Log.AccessLog == nil {
		on := true
		c.Log.AccessLog = &on
	}
	if len(c.Registries) == 0 {
		c.Registries = []Registry{{
			Name:          DefaultDockerHubName,
			Upstream:      DefaultDockerHubURL,
			LibraryPrefix: true,
			Default:       true,
		}}
	}
	if len(c.Registries) == 1 {
		c.Registries[0].Default = true
	}
	if s.PublicBaseURL == "" {
		s.PublicBaseURL = localBaseURL(s)
		s.publicBaseURLDerived = true
	}
	s.PublicBaseURL = strings.TrimSuffix(s.PublicBaseURL, "/")
}

// localBaseURL is the fallback realm base when public_base_url is unset: safe (never taken from a
// request) and right for a mirror used from the same machine.
func localBaseURL(s *Server) string {
	scheme, addr, defPort := "http", s.Listen, defaultHTTPPort
	if s.TLSListen != "" {
		scheme, addr, defPort = "https", s.TLSListen, defaultHTTPSPort
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" || port == defPort {
		return scheme + "://localhost"
	}
	return scheme + "://localhost:" + port
}

// PublicBaseURLDerived reports whether public_base_url was derived from the listeners
// rather than configured, so that main can warn the operator.
func (s *Server) PublicBaseURLDerived() bool { return s.publicBaseURLDerived }

// Validate checks the configuration and names the offending key in its error.
func (c *Config) Validate() error {
	s := &c.Server
	if err := checkAddr("server.listen", s.Listen); err != nil {
		return err
	}
	if err := checkAddr("server.tls_listen", s.TLSListen); err != nil {
		return err
	}
	if err := ValidatePublicBaseURL(s.PublicBaseURL); err != nil {
		return fmt.Errorf("server.public_base_url: %w", err)
	}
	if s.MaxConnsPerHost < 0 {
		return errors.New("server.max_conns_per_host: must be positive")
	}
	if v := s.UpstreamIPVersion; v != 0 && v != 4 && v != 6 {
		return fmt.Errorf("server.upstream_ip_version: %d is not 0 (both), 4 or 6", v)
	}
	if s.TLSListen != "" && !c.TLS.ACME.Enabled() && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		return errors.New("tls.cert_file and tls.key_file (or DOCXY_CERT_PATH and DOCXY_KEY_PATH), or tls.acme.domains, are required when server.tls_listen is set")
	}
	if c.TLS.ACME.Enabled() && s.TLSListen == "" {
		return errors.New("tls.acme: server.tls_listen must be set to serve the certificates ACME obtains")
	}
	if c.TLS.ACME.Enabled() && c.TLS.CertFile != "" {
		return errors.New("tls: set either cert_file/key_file or acme.domains, not both")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("tls.cert_file and tls.key_file must be set together")
	}
	if c.Cache.S3.Enabled() && c.Cache.S3.Endpoint == "" {
		return errors.New("cache.s3.endpoint: must be set when cache.s3.bucket is")
	}
	if c.Cache.S3.Enabled() && c.Cache.Disabled {
		return errors.New("cache.s3: the shared tier needs the local cache (cache.disabled = false)")
	}
	if l := c.Limits; l.RequestsPerSecond < 0 || l.Burst < 0 || l.MaxBlobsPerIP < 0 || l.DailyBytesPerIP < 0 || l.MaxConnsPerIP < 0 {
		return errors.New("limits: values must not be negative (0 turns a limit off)")
	}
	if p := c.Limits.IPv6Prefix; p < 16 || p > 128 {
		return fmt.Errorf("limits.ipv6_prefix: %d is not between 16 and 128 (64 counts one subscriber's /64 as one client)", p)
	}
	if c.Cache.MaxSize < 0 {
		return errors.New("cache.max_size: must be positive")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not one of text, json", c.Log.Format)
	}
	return c.validateRegistries()
}

func (c *Config) validateRegistries() error {
	names := map[string]bool{}
	hosts := map[string]string{}
	defaults := 0
	for i := range c.Registries {
		r := &c.Registries[i]
		where := fmt.Sprintf("registry[%d]", i)
		if r.Name == "" {
			return fmt.Errorf("%s.name: must be set", where)
		}
		if len(r.Name) > maxRegistryNameLength || strings.ContainsAny(r.Name, " \t\"\\") {
			return fmt.Errorf("%s.name: %q must be a short name without spaces or quotes", where, r.Name)
		}
		where = fmt.Sprintf("registry %q", r.Name)
		if names[r.Name] {
			return fmt.Errorf("%s: name is used twice", where)
		}
		names[r.Name] = true
		u, err := url.Parse(r.Upstream)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return fmt.Errorf("%s.upstream: %q must look like https://registry.example.com (scheme and host only)", where, r.Upstream)
		}
		r.Upstream = u.Scheme + "://" + u.Host
		for j, h := range r.Hosts {
			h = strings.ToLower(strings.TrimSpace(h))
			if h == "" || strings.ContainsAny(h, "/ @?#") {
				return fmt.Errorf("%s.hosts: %q is not a host name", where, r.Hosts[j])
			}
			if other, dup := hosts[h]; dup {
				return fmt.Errorf("%s.hosts: %q is already served by registry %q", where, h, other)
			}
			hosts[h] = r.Name
			r.Hosts[j] = h
		}
		if r.Default {
			defaults++
		}
		if (r.Username == "") != (r.Password == "") {
			return fmt.Errorf("%s: username and password must be set together", where)
		}
		for j, a := range r.Accounts {
			if a.Username == "" || a.Password == "" {
				return fmt.Errorf("%s.accounts[%d]: username and password must both be set", where, j)
			}
		}
		if r.TokenRealm != "" {
			if u, err := url.Parse(r.TokenRealm); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("%s.token_realm: %q must be an http(s) URL", where, r.TokenRealm)
			}
		}
	}
	if defaults > 1 {
		return errors.New("registry: only one registry may set default = true")
	}
	return nil
}

// ValidatePublicBaseURL accepts scheme://host[:port] with scheme http or https and nothing else,
// so that the token realm handed to clients cannot be steered anywhere else.
func ValidatePublicBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("cannot parse %q: %w", s, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: scheme must be http or https", s)
	case u.Host == "":
		return fmt.Errorf("%q: host is missing", s)
	case u.User != nil:
		return fmt.Errorf("%q: must not contain user info", s)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.Opaque != "":
		return fmt.Errorf("%q: must not contain a path, query or fragment", s)
	}
	return nil
}

func checkAddr(key, addr string) error {
	if addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s: %q must be host:port or :port: %w", key, addr, err)
	}
	return nil
}

func setDuration(d *Duration, def time.Duration) {
	if d.Duration == 0 {
		d.Duration = def
	}
}
