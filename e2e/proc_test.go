package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopTimeout is how long a process gets to exit after SIGTERM before it is killed.
const stopTimeout = 10 * time.Second

// proc is a child process started by the tests. Its stdout and stderr go to one log file.
// It is stopped by its own PID, never by name.
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has been reaped
	waitErr error         // valid after done is closed
}

// startProc starts argv[0] with argv[1:], env added to the test's environment, logging to logPath
// (appended, so that a restarted process keeps one log).
func startProc(name, logPath string, env []string, argv ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = f
	cmd.Stderr = f
	// Kill the child if the test binary dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID returns the process id.
func (p *proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits; it kills the process if it has not exited after stopTimeout.
func (p *proc) Stop() error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		p.Kill()
		return fmt.Errorf("%s (pid %d) did not exit %s after SIGTERM; killed", p.name, p.PID(), stopTimeout)
	}
}

// Kill sends SIGKILL and waits for the process to be reaped.
func (p *proc) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// LogTail returns the last n lines of the process log.
func (p *proc) LogTail(n int) string { return fileTail(p.logPath, n) }

func fileTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = lines[len(lines)-n:]
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls check until it returns nil, the process exits, or timeout passes.
func waitReady(p *proc, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited before it was ready (%v); log:\n%s", p.name, p.waitErr, p.LogTail(30))
		}
		if last = check(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			tail := ""
			if p != nil {
				tail = "; log:\n" + p.LogTail(30)
			}
			return fmt.Errorf("not ready after %s: %v%s", timeout, last, tail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// httpStatusIs returns a check for waitReady: GET url answers one of the statuses.
func httpStatusIs(client *http.Client, url string, statuses ...int) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		for _, s := range statuses {
			if resp.StatusCode == s {
				return nil
			}
		}
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
}

// runCmd runs a short-lived client command with a deadline and returns its combined output.
func runCmd(ctx context.Context, timeout time.Duration, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (timed out after %s)", err, timeout)
	}
	if err != nil {
		return string(out), fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out), nil
}

// pidRegistry remembers the PIDs of the docxy processes, so that hits on the token server and CDN
// can be attributed.
var pidRegistry = struct {
	sync.Mutex
	docxy map[int]bool
}{docxy: map[int]bool{}}

func registerDocxyPID(pid int) {
	pidRegistry.Lock()
	pidRegistry.docxy[pid] = true
	pidRegistry.Unlock()
}

func isDocxyPID(pid int) bool {
	pidRegistry.Lock()
	defer pidRegistry.Unlock()
	return pidRegistry.docxy[pid]
}

// errNoOwner is returned when no process holds the client end of a connection (it closed already).
var errNoOwner = errors.New("no process holds the client socket")
