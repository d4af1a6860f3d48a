package e2e

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// tcpProxy forwards loopback TCP connections to a target and can cut them: once armed, the first
// connection that carries more than the armed number of bytes towards the client (counted from
// the moment of arming) is closed abruptly, as if the upstream died mid-response.
type tcpProxy struct {
	Addr   string // 127.0.0.1:PORT
	target string

	ln    net.Listener
	armed atomic.Int64 // >0: byte budget per connection, counted from arming
	epoch atomic.Int64 // bumped on every Arm so connections restart their count
	cuts  atomic.Int64 // connections cut so far
	conns atomic.Int64 // connections accepted so far

	mu   sync.Mutex // protects open
	open map[net.Conn]struct{}
	wg   sync.WaitGroup
}

func startTCPProxy(target string) (*tcpProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &tcpProxy{Addr: ln.Addr().String(), target: target, ln: ln, open: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Arm cuts the next connection that sends more than n bytes to its client from now on.
func (p *tcpProxy) Arm(n int64) {
	p.epoch.Add(1)
	p.armed.Store(n)
}

// Cuts returns how many connections were cut.
func (p *tcpProxy) Cuts() int64 { return p.cuts.Load() }

// Close stops accepting and closes all connections.
func (p *tcpProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *tcpProxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	if add {
		p.open[c] = struct{}{}
	} else {
		delete(p.open, c)
	}
	p.mu.Unlock()
}

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		p.wg.Add(1)
		go p.serve(down)
	}
}

func (p *tcpProxy) serve(down net.Conn) {
	defer p.wg.Done()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		down.Close()
		return
	}
	p.track(down, true)
	p.track(up, true)
	defer func() {
		p.track(down, false)
		p.track(up, false)
		down.Close()
		up.Close()
	}()
	go func() {
		io.Copy(up, down)
		if tc, ok := up.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	buf := make([]byte, 32<<10)
	var sent int64
	epoch := p.epoch.Load()
	for {
		n, err := up.Read(buf)
		if n > 0 {
			if e := p.epoch.Load(); e != epoch {
				epoch, sent = e, 0
			}
			if budget := p.armed.Load(); budget > 0 && sent+int64(n) > budget {
				if p.armed.CompareAndSwap(budget, 0) { // one-shot
					down.Write(buf[:budget-sent])
					p.cuts.Add(1)
					if tc, ok := down.(*net.TCPConn); ok {
						tc.SetLinger(0) // RST, as a dying upstream does
					}
					return
				}
			}
			if _, werr := down.Write(buf[:n]); werr != nil {
				return
			}
			sent += int64(n)
		}
		if err != nil {
			return
		}
	}
}
