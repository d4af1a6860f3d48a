// Command docxyprof serves docxy's handler (proxy.New) on plain HTTP the way docxy's main.go does,
// and writes pprof profiles of the whole run when it gets SIGTERM or SIGINT. bench/loadtest.sh runs
// it in place of docxy when PROFILE=1, so that the out-of-process load test can be profiled.
//
//	docxyprof -config docxy.toml -cpuprofile cpu.pprof -memprofile mem.pprof
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/docxy/docxy/config"
	"github.com/docxy/docxy/proxy"
	"github.com/valyala/fasthttp"
)

func main() {
	configPath := flag.String("config", "", "path to docxy's TOML configuration")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	memProfile := flag.String("memprofile", "", "write an allocation profile (alloc_objects, alloc_space) to this file")
	flag.Parse()
	if err := run(*configPath, *cpuProfile, *memProfile); err != nil {
		fmt.Fprintln(os.Stderr, "docxyprof:", err)
		os.Exit(1)
	}
}

func run(configPath, cpuProfile, memProfile string) error {
	if configPath == "" {
		return errors.New("-config is required")
	}
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	if cfg.Server.Listen == "" {
		return errors.New("server.listen is empty: docxyprof serves plain HTTP only")
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	h, err := proxy.New(cfg, proxy.Options{Version: "prof", Logger: log})
	if err != nil {
		return err
	}
	defer h.Close()
	// The same settings as newServer in docxy's main.go.
	srv := &fasthttp.Server{
		Handler:            h.ServeHTTP,
		Name:               "docxy",
		ReadTimeout:        cfg.Server.ReadTimeout.Duration,
		IdleTimeout:        cfg.Server.IdleTimeout.Duration,
		MaxRequestBodySize: 64 << 10,
		ReadBufferSize:     16 << 10,
		CloseOnShutdown:    true,
	}
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on server.listen %s: %w", cfg.Server.Listen, err)
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return fmt.Errorf("cannot create the CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cannot start the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if memProfile != "" {
		runtime.MemProfileRate = 4096
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-errc:
		return err
	case <-sigc:
	}
	_ = srv.Shutdown()
	if memProfile != "" {
		f, err := os.Create(memProfile)
		if err != nil {
			return fmt.Errorf("cannot create the allocation profile: %w", err)
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			return fmt.Errorf("cannot write the allocation profile: %w", err)
		}
	}
	return nil
}
