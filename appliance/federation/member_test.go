package federation

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/qa/testutil"
)

// slowDown is a site's cluster whose applies of a session's end are held
// until released (a slow commit).
type slowDown struct {
	Cluster
	entered chan struct{}
	held    chan struct{}
	applies chan bool // the Connected of each session state applied
}

func (c *slowDown) Apply(ctx context.Context, t consensus.MessageType, cmd any, out any) (uint64, error) {
	if st, ok := cmd.(*sessionState); ok {
		if !st.Connected {
			close(c.entered)
			<-c.held
		}
		defer func() { c.applies <- st.Connected }()
	}
	return c.Cluster.Apply(ctx, t, cmd, out)
}

// A session that ends and comes up again at once is recorded as up: the
// record of its end, slow to commit, cannot land after the record of its
// return.
func TestSessionStateRecordedInOrder(t *testing.T) {
	ctx := context.Background()
	c := consensustest.Start(t, 1, func(r *consensus.Registry) {
		identity.Register(r)
		RegisterSite(r)
	})
	n := c.Nodes[0]
	if _, err := n.Apply(ctx, MsgJoinHub, &Membership{HubURL: "https://hub.example:9443", SiteID: "site-1", SiteName: "ward-north"}, nil); err != nil {
		t.Fatal(err)
	}
	slow := &slowDown{Cluster: n, entered: make(chan struct{}), held: make(chan struct{}), applies: make(chan bool, 4)}
	id := identity.NewService(n, identity.DefaultConfig())
	m := NewMember(slow, "node1", id, slog.New(slog.DiscardHandler))

	m.set(ctx, "site-1", false, errors.New("dial: connection refused"))
	<-slow.entered
	m.set(ctx, "site-1", true, nil)
	time.Sleep(100 * time.Millisecond) // the up state, applied at once if nothing orders it
	close(slow.held)
	var order []bool
	testutil.WaitFor(t, 10*time.Second, "the session recorded as up", func() error {
		select {
		case up := <-slow.applies:
			order = append(order, up)
		default:
		}
		if st := m.Status(); !st.Connected || st.LastError != "dial: connection refused" {
			return errors.New("not up")
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	for len(slow.applies) > 0 {
		order = append(order, <-slow.applies)
	}
	if len(order) != 2 || order[0] || !order[1] {
		t.Fatalf("applied in the order %v, want down then up", order)
	}
	if st := m.Status(); !st.Connected {
		t.Fatalf("the record says %+v", st)
	}
}
