// Command imferret runs an embedded FerretDB (SQLite backend) that speaks the
// MongoDB wire protocol on a loopback address. It exists only for ngx_im's tests
// and dev stack, where no mongod is available.
//
//	imferret -listen 127.0.0.1:27018 -dir /path/to/state -log-level warn
//
// Once the listener is bound it prints one line "ready mongodb://ADDR/" to stdout.
// SIGTERM/SIGINT shut it down gracefully (open connections get a few seconds);
// a second signal exits at once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// checkLoopback refuses any listen address that is not on the loopback interface.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("bad -listen %q: %w", addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("bad -listen port %q: %w", port, err)
	}
	if host == "" {
		return fmt.Errorf("-listen %q would bind all interfaces; use 127.0.0.1:PORT", addr)
	}
	if host == "localhost" {
		return nil // Go resolves it from /etc/hosts; checked again after binding
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen %q is not a loopback address; only 127.0.0.0/8 or ::1 are allowed", addr)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s)) // debug, info, warn, error (optionally +N/-N)
	return l, err
}

func run() int {
	listen := flag.String("listen", "127.0.0.1:27018", "TCP address to listen on (loopback only; port 0 picks a free port)")
	dir := flag.String("dir", "", "state directory for the SQLite files (created if missing; required)")
	logLevel := flag.String("log-level", "warn", "log level: debug, info, warn, error")
	flag.Parse()

	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "imferret: unexpected arguments: %v\n", flag.Args())
		return 2
	}

	level, err := parseLevel(*logLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "imferret: bad -log-level %q: %v\n", *logLevel, err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	if err := checkLoopback(*listen); err != nil {
		fmt.Fprintf(os.Stderr, "imferret: %v\n", err)
		return 2
	}

	if *dir == "" {
		fmt.Fprintln(os.Stderr, "imferret: -dir is required")
		return 2
	}
	absDir, err := filepath.Abs(*dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "imferret: -dir: %v\n", err)
		return 2
	}
	// FerretDB puts the path into a "file:" URI verbatim, without escaping.
	if strings.ContainsAny(absDir, "?#%") {
		fmt.Fprintf(os.Stderr, "imferret: -dir %q must not contain '?', '#' or '%%'\n", absDir)
		return 2
	}
	if err := os.MkdirAll(absDir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "imferret: -dir: %v\n", err)
		return 1
	}

	// Telemetry: the embeddable package never starts the reporter and marks
	// telemetry as disabled and locked itself; DO_NOT_TRACK is set only as a
	// belt-and-braces measure.
	_ = os.Setenv("DO_NOT_TRACK", "1")

	fdb, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: *listen},
		Logger:   logger,
		Handler:  "sqlite",
		// trailing slash required; the directory must exist
		SQLiteURL: "file:" + absDir + "/",
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "imferret: %v\n", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// The listener is already bound by New; MongoDBURI returns the real address
	// (useful with port 0).
	uri := fdb.MongoDBURI()
	if tcp, ok := addrOf(uri); ok {
		if ip := net.ParseIP(tcp); ip == nil || !ip.IsLoopback() {
			fmt.Fprintf(os.Stderr, "imferret: bound to non-loopback %s; refusing\n", tcp)
			return 2
		}
	}

	done := make(chan error, 1)
	go func() { done <- fdb.Run(ctx) }()

	fmt.Printf("ready %s\n", uri)
	logger.Info("imferret ready", slog.String("uri", uri), slog.String("dir", absDir))

	select {
	case err = <-done:
	case <-ctx.Done():
		stop() // a second signal now kills the process (default disposition)
		logger.Info("imferret: shutting down")
		err = <-done
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "imferret: %v\n", err)
		return 1
	}
	return 0
}

// addrOf extracts the host (IP) part from "mongodb://HOST:PORT/".
func addrOf(uri string) (string, bool) {
	s := strings.TrimPrefix(uri, "mongodb://")
	s = strings.TrimSuffix(s, "/")
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return "", false
	}
	return host, true
}

func main() {
	os.Exit(run())
}
