package proxy

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxTrackedRepositories bounds the pull counters behind the front page's top list.
const maxTrackedRepositories = 5000

// activity keeps the live figures of the front page: bytes and requests served, requests per
// minute over the last hour, and pulls per repository. It survives configuration reloads.
type activity struct {
	bytes    atomic.Int64
	requests atomic.Int64
	minutes  [60]minuteSlot

	mu    sync.RWMutex // protects pulls
	pulls map[string]*atomic.Int64
}

type minuteSlot struct {
	minute atomic.Int64 // unix minute this slot counts
	n      atomic.Int64
}

func newActivity() *activity { return &activity{pulls: map[string]*atomic.Int64{}} }

func (a *activity) request(now time.Time, bytes int) {
	a.requests.Add(1)
	if bytes > 0 {
		a.bytes.Add(int64(bytes))
	}
	m := now.Unix() / 60
	s := &a.minutes[m%int64(len(a.minutes))]
	if s.minute.Load() != m && s.minute.Swap(m) != m {
		s.n.Store(0)
	}
	s.n.Add(1)
}

// pulled counts a manifest served for key ("registry\x00repository"). It allocates only for a
// repository it has not seen.
func (a *activity) pulled(key string) {
	a.mu.RLock()
	c := a.pulls[key]
	a.mu.RUnlock()
	if c == nil {
		a.mu.Lock()
		if c = a.pulls[key]; c == nil {
			if len(a.pulls) >= maxTrackedRepositories {
				a.mu.Unlock()
				return
			}
			c = new(atomic.Int64)
			a.pulls[strings.Clone(key)] = c
		}
		a.mu.Unlock()
	}
	c.Add(1)
}

// perMinute returns the request counts of the last 60 minutes, oldest first.
func (a *activity) perMinute(now time.Time) []int64 {
	out := make([]int64, len(a.minutes))
	cur := now.Unix() / 60
	for i := range out {
		m := cur - int64(len(out)-1-i)
		s := &a.minutes[m%int64(len(a.minutes))]
		if s.minute.Load() == m {
			out[i] = s.n.Load()
		}
	}
	return out
}

type repoPulls struct {
	Name  string
	Pulls int64
}

// top returns the n most pulled repositories.
func (a *activity) top(n int) []repoPulls {
	a.mu.RLock()
	out := make([]repoPulls, 0, len(a.pulls))
	for k, v := range a.pulls {
		out = append(out, repoPulls{strings.Replace(k, "\x00", "/", 1), v.Load()})
	}
	a.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pulls != out[j].Pulls {
			return out[i].Pulls > out[j].Pulls
		}
		return out[i].Name < out[j].Name
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}
