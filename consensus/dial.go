package consensus

import (
	"context"
	"errors"
	"net"
	"time"
)

// connectAttempt is how long one TCP connect to a peer waits for its SYN
// to be answered. On the cluster's LAN an answer takes well under a
// millisecond. A SYN lost to a cut link (a cable pulled, a switch
// rebooting, a partition) is resent by the kernel only after 1 s and then
// 3 s more, so a peer back on the wire would stay unreached for seconds:
// long enough for a node's VM lease to lapse and its VMs to be fenced
// (hypervisor's HATiming) after a blip of two.
const connectAttempt = 250 * time.Millisecond

// dialPeer connects to addr by TCP within budget (and ctx), with a fresh
// SYN every connectAttempt until one is answered; every fourth attempt
// waits twice as long, up to 8 times, so a peer that answers slowly (a
// box under heavy load) is still reached. Any other failure (refused,
// unreachable, a firewall's EPERM) returns at once: callers have their
// own backoff.
func dialPeer(ctx context.Context, network, addr string, budget time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var d net.Dialer
	for i := 0; ; i++ {
		actx, acancel := context.WithTimeout(ctx, connectAttempt<<min(i/4, 3))
		c, err := d.DialContext(actx, network, addr)
		acancel()
		if err == nil {
			return c, nil
		}
		var ne net.Error
		if ctx.Err() != nil || !errors.As(err, &ne) || !ne.Timeout() {
			return nil, err
		}
	}
}
