package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// peer describes who sent a request to one of the in-process servers.
type peer struct {
	RemoteAddr string
	UserAgent  string
	PID        int    // process holding the client end of the connection, 0 if unknown
	Comm       string // its command name
}

func (p peer) String() string {
	return fmt.Sprintf("%s pid=%d comm=%q ua=%q", p.RemoteAddr, p.PID, p.Comm, p.UserAgent)
}

// IsDocxy reports whether the request came from a docxy process started by these tests.
func (p peer) IsDocxy() bool { return p.PID != 0 && isDocxyPID(p.PID) }

// peerOf identifies the process on the other end of r's loopback connection: it finds the client
// socket in /proc/net/tcp{,6} (local port = r's remote port, remote port = the server's port) and
// the process whose fd table holds that socket inode. It must run while the connection is open.
func peerOf(r *http.Request) peer {
	p := peer{RemoteAddr: r.RemoteAddr, UserAgent: r.UserAgent()}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		return p
	}
	_, sport, _ := net.SplitHostPort(local.String())
	_, cport, _ := net.SplitHostPort(r.RemoteAddr)
	p.PID, p.Comm, _ = connOwner(cport, sport)
	return p
}

// connOwner returns the process holding the TCP socket whose local port is cport and whose
// remote port is sport.
func connOwner(cport, sport string) (int, string, error) {
	cp, err1 := strconv.Atoi(cport)
	sp, err2 := strconv.Atoi(sport)
	if err1 != nil || err2 != nil {
		return 0, "", fmt.Errorf("bad ports %q %q", cport, sport)
	}
	inode := ""
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if inode, _ = findInode(f, cp, sp); inode != "" {
			break
		}
	}
	if inode == "" {
		return 0, "", errNoOwner
	}
	want := "socket:[" + inode + "]"
	// Look at the docxy processes first: that is the common, expected answer.
	pidRegistry.Lock()
	known := make([]int, 0, len(pidRegistry.docxy))
	for pid := range pidRegistry.docxy {
		known = append(known, pid)
	}
	pidRegistry.Unlock()
	for _, pid := range known {
		if holdsFD(pid, want) {
			return pid, comm(pid), nil
		}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, "", err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if holdsFD(pid, want) {
			return pid, comm(pid), nil
		}
	}
	return 0, "", errNoOwner
}

func findInode(path string, cport, sport int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[3] == "0A" { // 0A is LISTEN
			continue
		}
		if hexPort(fs[1]) == cport && hexPort(fs[2]) == sport {
			return fs[9], nil
		}
	}
	return "", sc.Err()
}

func hexPort(addr string) int {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return -1
	}
	v, err := strconv.ParseUint(addr[i+1:], 16, 16)
	if err != nil {
		return -1
	}
	return int(v)
}

func holdsFD(pid int, target string) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == target {
			return true
		}
	}
	return false
}

func comm(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}
