package config

import (
	"strings"
	"testing"
	"time"
)

func TestDefault(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("built-in default does not validate: %s", err)
	}
	if c.Server.Listen != ":5000" || c.Server.PublicBaseURL != "http://localhost:5000" || !c.Server.PublicBaseURLDerived() {
		t.Fatalf("unexpected default server: %+v", c.Server)
	}
	if len(c.Registries) != 1 || c.Registries[0].Upstream != DefaultDockerHubURL || !c.Registries[0].LibraryPrefix || !c.Registries[0].Default {
		t.Fatalf("unexpected default registries: %+v", c.Registries)
	}
	if c.Cache.Disabled || c.Cache.MaxSize != DefaultCacheMaxSize || c.Cache.ManifestTTL.Duration != DefaultManifestTTL {
		t.Fatalf("unexpected default cache: %+v", c.Cache)
	}
}

func TestParse(t *testing.T) {
	c, err := Parse([]byte(`
[server]
listen = "127.0.0.1:8080"
public_base_url = "https://mirror.example.com/"
upstream_timeout = "5s"
[cache]
dir = "/var/cache/docxy"
max_size = "1.5GiB"
[[registry]]
name = "docker.io"
upstream = "https://registry-1.docker.io/"
library_prefix = true
default = true
[[registry]]
name = "ghcr"
upstream = "https://ghcr.io"
hosts = ["GHCR.Mirror.Example.com"]
`), "t.toml")
	if err != nil {
		t.Fatalf("unexpected error: %s", err)
	}
	if c.Server.PublicBaseURL != "https://mirror.example.com" || c.Server.PublicBaseURLDerived() {
		t.Fatalf("unexpected public_base_url: %q", c.Server.PublicBaseURL)
	}
	if c.Server.UpstreamTimeout.Duration != 5*time.Second || c.Server.IdleTimeout.Duration != DefaultIdleTimeout {
		t.Fatalf("unexpected timeouts: %+v", c.Server)
	}
	if c.Cache.MaxSize != Size(1.5*(1<<30)) {
		t.Fatalf("unexpected max_size: got %d", c.Cache.MaxSize)
	}
	if c.Registries[0].Upstream != "https://registry-1.docker.io" || c.Registries[1].Hosts[0] != "ghcr.mirror.example.com" {
		t.Fatalf("unexpected registries: %+v", c.Registries)
	}
}

func TestParseErrors(t *testing.T) {
	f := func(toml, wantInError string) {
		t.Helper()
		_, err := Parse([]byte(toml), "t.toml")
		if err == nil {
			t.Fatalf("expected an error for %q", toml)
		}
		if !strings.Contains(err.Error(), wantInError) {
			t.Fatalf("unexpected error: got %q; want it to mention %q", err, wantInError)
		}
	}
	f("[server]\nlisten_addr = \":1\"", "server.listen_addr")
	f("[serverr]\nlisten = \":1\"", "serverr")
	f("[server]\npublic_base_url = \"ftp://x\"", "public_base_url")
	f("[server]\npublic_base_url = \"https://x/path\"", "public_base_url")
	f("[server]\npublic_base_url = \"https://user:pw@x\"", "user info")
	f("[server]\npublic_base_url = \"https://x?a=b\"", "public_base_url")
	f("[server]\nlisten = \"5000\"", "server.listen")
	f("[server]\nupstream_timeout = \"soon\"", "duration")
	f("[server]\ntls_listen = \":443\"", "tls.cert_file")
	f("[cache]\nmax_size = \"lots\"", "size")
	f("[log]\nlevel = \"loud\"", "log.level")
	f("[limits]\nipv6_prefix = 8", "limits.ipv6_prefix")
	f("[server]\nupstream_ip_version = 5", "server.upstream_ip_version")
	f("[limits]\nipv6_prefix = 129", "limits.ipv6_prefix")
	f("[[registry]]\nupstream = \"https://x\"", "name")
	f("[[registry]]\nname = \"a\"\nupstream = \"x\"", "upstream")
	f("[[registry]]\nname = \"a\"\nupstream = \"https://x/v2\"", "upstream")
	f("[[registry]]\nname = \"a\"\nupstream = \"https://x\"\nusername = \"u\"", "username and password")
	f("[[registry]]\nname = \"a\"\nupstream = \"https://x\"\ndefault = true\n[[registry]]\nname = \"b\"\nupstream = \"https://y\"\ndefault = true", "only one")
	f("[[registry]]\nname = \"a\"\nupstream = \"https://x\"\nhosts=[\"h\"]\n[[registry]]\nname = \"a\"\nupstream = \"https://y\"", "twice")
	f("[[registry]]\nname = \"a\"\nupstream = \"https://x\"\nhosts=[\"h\"]\n[[registry]]\nname = \"b\"\nupstream = \"https://y\"\nhosts=[\"H\"]", "already served")
	f("not toml ===", "cannot parse")
}

func TestParseSize(t *testing.T) {
	f := func(s string, want Size) {
		t.Helper()
		got, err := ParseSize(s)
		if err != nil || got != want {
			t.Fatalf("unexpected ParseSize(%q): got %d, %v; want %d", s, got, err, want)
		}
	}
	f("1024", 1024)
	f("512MiB", 512<<20)
	f("20GiB", 20<<30)
	f("20GB", 20e9)
	f("1.5G", Size(1.5*(1<<30)))
	f("0", 0)
	for _, bad := range []string{"", "-1", "GiB", "1 parsec"} {
		if _, err := ParseSize(bad); err == nil {
			t.Fatalf("expected an error for %q", bad)
		}
	}
}

func TestEnvOverridesTLSFiles(t *testing.T) {
	t.Setenv("DOCXY_CERT_PATH", "/env/cert.pem")
	t.Setenv("DOCXY_KEY_PATH", "/env/key.pem")
	c, err := Parse([]byte("[server]\ntls_listen = \":8443\"\n[tls]\ncert_file = \"/file/cert.pem\"\nkey_file = \"/file/key.pem\""), "t.toml")
	if err != nil {
		t.Fatalf("unexpected error: %s", err)
	}
	if c.TLS.CertFile != "/env/cert.pem" || c.TLS.KeyFile != "/env/key.pem" {
		t.Fatalf("unexpected TLS files: %+v", c.TLS)
	}
	if c.Server.PublicBaseURL != "https://localhost:8443" {
		t.Fatalf("unexpected derived public_base_url: %q", c.Server.PublicBaseURL)
	}
}

func TestExampleFileIsValid(t *testing.T) {
	c, err := Load("../config.toml.example")
	if err != nil {
		t.Fatalf("config.toml.example does not load: %s", err)
	}
	if len(c.Registries) != 4 || c.Registries[0].Name != "docker.io" || !c.Registries[0].Default {
		t.Fatalf("unexpected registries in the example: %+v", c.Registries)
	}
	// The example documents the defaults: it must not differ from them.
	d := Default()
	if c.Server != d.Server || c.Cache != d.Cache || c.Log.Level != d.Log.Level || c.Log.Format != d.Log.Format {
		t.Fatalf("config.toml.example differs from the built-in defaults:\n%+v\n%+v", c, d)
	}
}
