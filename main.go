// Command docxy is a Docker/OCI registry mirror: point Docker's "registry-mirrors" (or containerd's
// hosts.toml, or a docker pull prefix) at it and pulls go through it, token step included.
package main

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/docxy/docxy/config"
	"github.com/docxy/docxy/proxy"
	docxytls "github.com/docxy/docxy/tls"
	"github.com/valyala/fasthttp"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const maxRequestBodySize = 64 << 10 // token POST forms are the only bodies docxy reads

func main() {
	configPath := flag.String("config", "", "path to the TOML configuration (default: $DOCXY_CONFIG, else built-in defaults)")
	check := flag.Bool("check", false, "validate the configuration and exit")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("docxy", version)
		return
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "docxy:", err)
		os.Exit(2)
	}
	if *check {
		fmt.Println("docxy: configuration is valid")
		return
	}
	if *configPath == "" {
		*configPath = config.ConfigPathFromEnv()
	}
	if err := run(cfg, *configPath); err != nil {
		fmt.Fprintln(os.Stderr, "docxy:", err)
		os.Exit(1)
	}
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		path = config.ConfigPathFromEnv()
	}
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func run(cfg *config.Config, configPath string) error {
	// Signals are caught before anything listens, so an early SIGHUP cannot kill the process.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigc)
	log := newLogger(cfg.Log)
	h, err := proxy.New(cfg, proxy.Options{Version: version, Logger: log})
	if err != nil {
		return err
	}
	// current is swapped on SIGHUP; requests in flight finish on the handler they started with.
	var current atomic.Pointer[proxy.Handler]
	current.Store(h)
	saveCtx, stopSaving := context.WithCancel(context.Background())
	defer stopSaving()
	go saveManifestsEvery(saveCtx, proxy.ManifestSnapshotInterval, &current, log)
	serve := func(ctx *fasthttp.RequestCtx) { current.Load().ServeHTTP(ctx) }
	defer func() { current.Load().Close() }()
	if cfg.Server.PublicBaseURLDerived() {
		log.Warn("server.public_base_url is not set: clients are sent to " + cfg.Server.PublicBaseURL +
			" for tokens; set it to the URL clients use to reach this mirror")
	}

	newServer := func(handler fasthttp.RequestHandler) *fasthttp.Server {
		return &fasthttp.Server{
			Handler:            handler,
			Name:               "docxy",
			ReadTimeout:        cfg.Server.ReadTimeout.Duration,
			IdleTimeout:        cfg.Server.IdleTimeout.Duration,
			MaxRequestBodySize: maxRequestBodySize,
			ReadBufferSize:     16 << 10, // also the header size limit
			MaxConnsPerIP:      cfg.Limits.MaxConnsPerIP,
			CloseOnShutdown:    true,
			Logger:             slogPrintf{log},
		}
	}
	var servers []*fasthttp.Server
	errc := make(chan error, 2)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var reloader *docxytls.Reloader
	var acme *docxytls.ACME
	if cfg.Server.TLSListen != "" {
		var tlsConfig *stdtls.Config
		if cfg.TLS.ACME.Enabled() {
			a := cfg.TLS.ACME
			acme, err = docxytls.NewACME(docxytls.ACMEConfig{Email: a.Email, Domains: a.Domains, CacheDir: a.CacheDir,
				DirectoryURL: a.DirectoryURL, CARootFile: a.CARootFile})
			if err != nil {
				return err
			}
			tlsConfig = acme.TLSConfig()
		} else {
			reloader, err = docxytls.NewReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile)
			if err != nil {
				return err
			}
			tlsConfig = docxytls.ServerConfig(reloader.GetCertificate)
			go reloader.Watch(ctx, docxytls.DefaultWatchInterval, func(format string, args ...any) {
				log.Info(fmt.Sprintf(format, args...))
			})
		}
		ln, err := net.Listen("tcp", cfg.Server.TLSListen)
		if err != nil {
			return fmt.Errorf("cannot listen on server.tls_listen %s: %w", cfg.Server.TLSListen, err)
		}
		s := newServer(serve)
		servers = append(servers, s)
		log.Info("serving HTTPS", "addr", ln.Addr().String(), "public_base_url", cfg.Server.PublicBaseURL)
		go func() { errc <- s.Serve(stdtls.NewListener(ln, tlsConfig)) }()
	}
	if cfg.Server.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Server.Listen)
		if err != nil {
			return fmt.Errorf("cannot listen on server.listen %s: %w", cfg.Server.Listen, err)
		}
		handler := fasthttp.RequestHandler(serve)
		if cfg.Server.TLSListen != "" && !cfg.Server.BehindProxy {
			handler = redirectToHTTPS(cfg.Server.PublicBaseURL)
		}
		if acme != nil {
			handler = serveACMEChallenges(acme, handler)
		}
		s := newServer(handler)
		servers = append(servers, s)
		log.Info("serving HTTP", "addr", ln.Addr().String(), "public_base_url", cfg.Server.PublicBaseURL, "version", version)
		go func() { errc <- s.Serve(ln) }()
	}

	for {
		select {
		case err := <-errc:
			return err
		case sig := <-sigc:
			if sig == syscall.SIGHUP {
				reloadConfig(configPath, cfg, &current, log)
				if reloader != nil {
					if err := reloader.Reload(); err != nil {
						log.Error("SIGHUP: keeping the current certificate", "err", err)
					} else {
						log.Info("SIGHUP: certificate reloaded", "not_after", reloader.Leaf().NotAfter)
					}
				}
				continue
			}
			log.Info("shutting down: no new connections; running transfers may finish",
				"signal", sig.String(), "timeout", cfg.Server.ShutdownTimeout.Duration)
		}
		break
	}
	stop()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.Duration)
	defer cancel()
	for _, s := range servers {
		if err := s.ShutdownWithContext(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			log.Warn("shutdown", "err", err)
		}
	}
	stopSaving()
	if n, err := current.Load().SaveManifests(); err != nil {
		log.Warn("shutdown: the next start re-fetches manifests", "err", err)
	} else if n > 0 {
		log.Info("manifest cache saved for the next start", "entries", n)
	}
	return nil
}

// saveManifestsEvery saves a changed manifest cache every interval, so that a restart after a
// crash too finds the manifests and revalidates tags with HEAD instead of fetching them again.
func saveManifestsEvery(ctx context.Context, interval time.Duration, current *atomic.Pointer[proxy.Handler], log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := current.Load().SaveManifests(); err != nil {
				log.Warn("cannot save the manifest cache", "err", err)
			}
		}
	}
}

// reloadConfig re-reads the configuration file and swaps in a handler built from it: registries,
// access rules, hosts and timeouts change without dropping connections. Listener, TLS and cache
// settings need a restart; a file that does not validate keeps the running configuration.
func reloadConfig(path string, running *config.Config, current *atomic.Pointer[proxy.Handler], log *slog.Logger) {
	if path == "" {
		log.Info("SIGHUP: no configuration file to reload (running on built-in defaults)")
		return
	}
	cfg, err := config.Load(path)
	if err != nil {
		log.Error("SIGHUP: keeping the running configuration", "err", err)
		return
	}
	if cfg.Server.Listen != running.Server.Listen || cfg.Server.TLSListen != running.Server.TLSListen || cfg.TLS.CertFile != running.TLS.CertFile {
		log.Warn("SIGHUP: listener and TLS file changes take effect after a restart")
	}
	old := current.Load()
	h, err := proxy.New(cfg, proxy.Options{Version: version, Logger: newLogger(cfg.Log), Previous: old})
	if err != nil {
		log.Error("SIGHUP: keeping the running configuration", "err", err)
		return
	}
	current.Store(h)
	old.Close()
	log.Info("SIGHUP: configuration reloaded", "file", path, "registries", len(cfg.Registries))
}

// serveACMEChallenges answers HTTP-01 challenges on the plain listener before anything else.
func serveACMEChallenges(acme *docxytls.ACME, next fasthttp.RequestHandler) fasthttp.RequestHandler {
	const prefix = "/.well-known/acme-challenge/"
	return func(ctx *fasthttp.RequestCtx) {
		if p := ctx.Path(); len(p) > len(prefix) && string(p[:len(prefix)]) == prefix {
			if body, ok := acme.HTTPChallengeResponse(string(ctx.Host()), string(p)); ok {
				ctx.SetContentType("text/plain")
				ctx.SetBody(body)
				return
			}
		}
		next(ctx)
	}
}

// redirectToHTTPS answers plain-HTTP requests with a 301 to the HTTPS public URL, except /health,
// which load balancers probe over plain HTTP.
func redirectToHTTPS(publicBase string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == proxy.PathHealth {
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"status":"ok"}`)
			return
		}
		ctx.Redirect(publicBase+string(ctx.RequestURI()), fasthttp.StatusMovedPermanently)
	}
}

// slogPrintf adapts slog to fasthttp's Logger.
type slogPrintf struct{ l *slog.Logger }

func (s slogPrintf) Printf(format string, args ...any) {
	s.l.Debug(fmt.Sprintf(format, args...))
}
