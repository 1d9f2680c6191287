package consensus

import (
	"net"
	"sync"
	"time"
)

// sourceLimit allows each source address a few events per window, in memory
// and bounded: it keeps requests that need no secret (pairing, pending
// nodes) from turning into a stream of Raft writes.
type sourceLimit struct {
	mu     sync.Mutex
	per    int           // events per source and window
	window time.Duration //
	max    int           // sources tracked at most
	seen   map[string]*sourceWindow
}

type sourceWindow struct {
	start time.Time
	n     int
}

func newSourceLimit(per int, window time.Duration, max int) *sourceLimit {
	return &sourceLimit{per: per, window: window, max: max, seen: map[string]*sourceWindow{}}
}

// allow counts one event from src at now and reports whether it is within
// the limit. When too many sources are tracked it refuses new ones rather
// than forget old ones, which would reset their budget.
func (l *sourceLimit) allow(src string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.seen[src]
	if w == nil || now.Sub(w.start) >= l.window {
		if w == nil && len(l.seen) >= l.max {
			for k, o := range l.seen {
				if now.Sub(o.start) >= l.window {
					delete(l.seen, k)
				}
			}
			if len(l.seen) >= l.max {
				return false
			}
		}
		w = &sourceWindow{start: now}
		l.seen[src] = w
	}
	if w.n >= l.per {
		return false
	}
	w.n++
	return true
}

func remoteHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// sourceGroup is the source a per-source limit counts: an IPv4 address, or
// the /64 of an IPv6 one (one host usually holds a whole /64).
func sourceGroup(remote string) string {
	h := remoteHost(remote)
	ip := net.ParseIP(h)
	if ip == nil || ip.To4() != nil {
		return h
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
