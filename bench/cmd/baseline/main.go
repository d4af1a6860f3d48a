// Command baseline serves the net/http baseline proxy (package bench/baseline) with docxy's TOML
// configuration, for the out-of-process load test (bench/loadtest.sh). It serves plain HTTP on
// server.listen only; TLS and the cache are ignored.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/docxy/docxy/bench/baseline"
	"github.com/docxy/docxy/config"
)

func main() {
	configPath := flag.String("config", "", "path to docxy's TOML configuration (default: $DOCXY_CONFIG, else built-in defaults)")
	flag.Parse()
	if err := run(*configPath); err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	if path == "" {
		path = config.ConfigPathFromEnv()
	}
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return err
		}
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	h, err := baseline.NewWithLogger(cfg, log)
	if err != nil {
		return err
	}
	if cfg.Server.Listen == "" {
		return errors.New("server.listen is empty: the baseline serves plain HTTP only")
	}
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on server.listen %s: %w", cfg.Server.Listen, err)
	}
	srv := baseline.NewServer(cfg, h)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serving HTTP", "addr", ln.Addr().String())
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-errc:
		return err
	case <-sigc:
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.Duration)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	h.CloseIdleConnections()
	return nil
}
