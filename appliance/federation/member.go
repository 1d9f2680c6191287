package federation

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// A site's side: its membership lives in the site's replicated state, so
// whichever node leads keeps the session (Run is a leader controller), and
// a new leader dials again from the same identity. Commands 520-527,
// protocol 7: a node that did not know them would drop the membership.
const (
	MsgJoinHub      consensus.MessageType = 520
	MsgLeaveHub     consensus.MessageType = 521
	MsgHubCA        consensus.MessageType = 522
	MsgSessionState consensus.MessageType = 523
)

const (
	tMembership = "federation_membership"
	tSession    = "federation_session"
)

// sessionState is the session as the node holding it last said, so that
// every node of the site answers the same: written when it comes up or
// goes down, or the reason it is down changes.
type sessionState struct {
	SiteID    string    `json:"site_id"`
	Node      string    `json:"node"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
}

// RegisterSite adds a site's tables and commands.
func RegisterSite(reg *consensus.Registry) {
	consensus.RegisterTable[Membership](reg, &memdb.TableSchema{Name: tMembership, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: consensus.Singleton{}},
	}})
	consensus.HandleSince(reg, MsgJoinHub, "JoinHub", 7, applyJoinHub)
	consensus.HandleSince(reg, MsgLeaveHub, "LeaveHub", 7, applyLeaveHub)
	consensus.HandleSince(reg, MsgHubCA, "SetHubCA", 7, applyHubCA)
	consensus.RegisterTable[sessionState](reg, &memdb.TableSchema{Name: tSession, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: consensus.Singleton{}},
	}})
	consensus.HandleSince(reg, MsgSessionState, "SetHubSessionState", 7, applySessionState)
	registerLedger(reg)
	registerSiteRenewal(reg)
}

func applySessionState(tx *consensus.Tx, c *sessionState) (any, error) {
	cur := consensus.First[Membership](tx.Txn, tMembership, "id")
	if cur == nil || cur.SiteID != c.SiteID {
		return nil, nil // left meanwhile
	}
	return nil, tx.Insert(tSession, c)
}

func applyJoinHub(tx *consensus.Tx, m *Membership) (any, error) {
	if cur := consensus.First[Membership](tx.Txn, tMembership, "id"); cur != nil {
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "this site is a member of the hub at %s already: leave it first", cur.HubURL)
	}
	return m.public(), tx.Insert(tMembership, m)
}

type leaveHubCmd struct {
	SiteID string `json:"site_id"`
}

func applyLeaveHub(tx *consensus.Tx, c *leaveHubCmd) (any, error) {
	cur := consensus.First[Membership](tx.Txn, tMembership, "id")
	if cur == nil || cur.SiteID != c.SiteID {
		return nil, nil // left already
	}
	if st := consensus.First[sessionState](tx.Txn, tSession, "id"); st != nil {
		if err := tx.Delete(tSession, st); err != nil {
			return nil, err
		}
	}
	return nil, tx.Delete(tMembership, cur)
}

type hubCACmd struct {
	SiteID  string   `json:"site_id"`
	CAPEM   []byte   `json:"ca_pem"`
	HubURLs []string `json:"hub_urls,omitempty"` // kept as they were when empty
}

func applyHubCA(tx *consensus.Tx, c *hubCACmd) (any, error) {
	cur := consensus.First[Membership](tx.Txn, tMembership, "id")
	if cur == nil || cur.SiteID != c.SiteID {
		return nil, nil
	}
	m := *cur
	m.CAPEM = c.CAPEM
	if len(c.HubURLs) > 0 {
		m.HubURLs = c.HubURLs
	}
	return nil, tx.Insert(tMembership, &m)
}

// public is the membership without its key.
func (m *Membership) public() *Membership {
	p := *m
	p.KeyPEM = nil
	return &p
}

// errDelegatedMembership keeps a site's membership its own admins' to
// change: a hub user could cut the site off for good.
var errDelegatedMembership = consensus.NewError(consensus.CodeForbidden, "a hub user cannot join or leave a hub for a site: ask the site's admin")

// Status is a site's federation as its admins see it.
type Status struct {
	Member    bool      `json:"member"`
	HubURL    string    `json:"hub_url,omitempty"`
	SiteID    string    `json:"site_id,omitempty"`
	SiteName  string    `json:"site_name,omitempty"`
	Connected bool      `json:"connected"`
	Node      string    `json:"node,omitempty"`       // that holds the session, or tries to
	Since     time.Time `json:"since,omitzero"`       // connected or not, since
	LastError string    `json:"last_error,omitempty"` // why the last session ended
}

// DefaultPushEvery is how often a site reads its inventory, and sends it
// if it changed.
const DefaultPushEvery = 2 * time.Second

// Member is a site's federation service.
type Member struct {
	c    Cluster
	node string
	id   *identity.Service
	log  *slog.Logger
	// Handler is what the hub reaches through the session.
	Handler http.Handler
	// Inventory reads the site's inventory for the hub (nil: none sent).
	Inventory func(context.Context) (*Inventory, error)
	// PushEvery is how often the inventory is read, and sent if it changed.
	PushEvery time.Duration
	// StagingDir holds images the hub pushes while they arrive ("": the
	// site takes none).
	StagingDir string
	// Ready tells whether Handler serves yet; until then intent steps
	// are not begun (nil: always).
	Ready func() bool
	// RenewCheck is how often a session checks whether the site's
	// certificate is due for renewal.
	RenewCheck time.Duration

	mu         sync.Mutex
	last       sessionState          // as this node last said it
	recording  bool                  // record runs
	term       context.Context       // of the leadership term the session runs in
	imageLocks map[string]*imageLock // staged images in use, by path
}

// NewMember returns a site's federation service on node.
func NewMember(c Cluster, node string, id *identity.Service, log *slog.Logger) *Member {
	return &Member{c: c, node: node, id: id, log: log, Handler: http.NotFoundHandler(), PushEvery: DefaultPushEvery, RenewCheck: time.Hour}
}

func (s *Member) membership() *Membership {
	return consensus.First[Membership](s.c.Store().ReadTxn(), tMembership, "id")
}

// Join enrols the site with a hub (cluster admin): the hub signs a key
// made here, and the membership is recorded for every node.
func (s *Member) Join(ctx context.Context, p *identity.Principal, hubURL, token string) (*Status, error) {
	const action = "federation.join"
	if p.Delegated() {
		return nil, s.id.Deny(ctx, p, action, hubURL, "", errDelegatedMembership)
	}
	if !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, hubURL, "", consensus.Errorf(consensus.CodeForbidden, "only cluster admins join a hub"))
	}
	if err := s.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	if cur := s.membership(); cur != nil {
		return nil, s.id.Deny(ctx, p, action, hubURL, "", consensus.Errorf(consensus.CodeAlreadyExists, "this site is a member of the hub at %s already: leave it first", cur.HubURL))
	}
	// Before the token is spent: every node must know the membership.
	if g, ok := s.c.(interface {
		Gate(consensus.MessageType) error
	}); ok {
		if err := g.Gate(MsgJoinHub); err != nil {
			return nil, s.id.Deny(ctx, p, action, hubURL, "", err)
		}
	}
	// Not cut short by the caller: an enrolment the hub made is recorded
	// here, or told to the hub as not kept.
	ctx = context.WithoutCancel(ctx)
	jctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	m, err := Join(jctx, hubURL, token)
	cancel()
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, hubURL, "", consensus.Errorf(consensus.CodeConflict, "enrol with the hub: %v", err))
	}
	if err := s.id.Mutate(ctx, p, action, m.SiteName, "", MsgJoinHub, m, nil); err != nil {
		if c := consensus.ErrorCode(err); (c == "" || c == consensus.CodeUnavailable) && s.c.ConsistentRead(ctx) == nil {
			if cur := s.membership(); cur != nil && cur.SiteID == m.SiteID {
				st := s.Status() // it was recorded after all
				return &st, nil
			}
		}
		// Not recorded here: the hub is told, so that the site may enrol
		// again rather than stay enrolled there with a key it forgot.
		if lerr := tellLeave(context.WithoutCancel(ctx), m); lerr != nil {
			s.log.Warn("the hub could not be told that an enrolment was not kept; its admin revokes the site before it enrols again", "err", lerr)
		}
		return nil, err
	}
	st := s.Status()
	return &st, nil
}

// Leave ends the site's membership (cluster admin): the hub is told, if
// it can be reached, and the membership is forgotten here either way.
func (s *Member) Leave(ctx context.Context, p *identity.Principal) error {
	const action = "federation.leave"
	if p.Delegated() {
		return s.id.Deny(ctx, p, action, "", "", errDelegatedMembership)
	}
	if !p.IsClusterAdmin() {
		return s.id.Deny(ctx, p, action, "", "", consensus.Errorf(consensus.CodeForbidden, "only cluster admins leave a hub"))
	}
	if err := s.c.ConsistentRead(ctx); err != nil {
		return err
	}
	m := s.membership()
	if m == nil {
		return s.id.Deny(ctx, p, action, "", "", consensus.Errorf(consensus.CodeNotFound, "this site is not a member of a hub"))
	}
	// Not cut short by the caller: once the hub is told, the site leaves.
	ctx = context.WithoutCancel(ctx)
	if err := tellLeave(ctx, m); err != nil {
		s.log.Warn("the hub could not be told that this site leaves; it shows the site as unreachable until its admin revokes it", "err", err)
	}
	return s.id.Mutate(ctx, p, action, m.SiteName, "", MsgLeaveHub, leaveHubCmd{SiteID: m.SiteID}, nil)
}

// Status says whether the site is a member and connected, as the node
// holding the session last recorded it.
func (s *Member) Status() Status {
	txn := s.c.Store().ReadTxn()
	st := Status{}
	m := consensus.First[Membership](txn, tMembership, "id")
	if m == nil {
		return st
	}
	st.Member, st.HubURL, st.SiteID, st.SiteName = true, m.HubURL, m.SiteID, m.SiteName
	if ss := consensus.First[sessionState](txn, tSession, "id"); ss != nil && ss.SiteID == m.SiteID {
		st.Connected, st.Node, st.Since, st.LastError = ss.Connected, ss.Node, ss.Since, ss.LastError
	}
	return st
}

// set records the session's state when it changed.
func (s *Member) set(ctx context.Context, siteID string, connected bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.last
	if next.SiteID != siteID || next.Connected != connected || next.Since.IsZero() {
		next.Since = time.Now().UTC()
	}
	next.SiteID, next.Node, next.Connected = siteID, s.node, connected
	if err != nil {
		next.LastError = err.Error()
	}
	if next == s.last {
		return
	}
	s.last = next
	if s.term == nil {
		s.term = ctx // set outside Run (tests)
	}
	if !s.recording {
		s.recording = true
		go s.record()
	}
}

// record applies the session's latest state until the record holds it:
// one at a time, so that a state cannot land after a later one (a session
// that failed and came up again within milliseconds would otherwise show
// as down for good). Every node says the session's state from this record
// alone, so a failed apply is tried again.
func (s *Member) record() {
	wait := time.Second
	for {
		s.mu.Lock()
		want, term := s.last, s.term
		s.mu.Unlock()
		actx, cancel := context.WithTimeout(context.WithoutCancel(term), 10*time.Second)
		_, err := s.c.Apply(actx, MsgSessionState, &want, nil)
		cancel()
		if err != nil {
			s.log.Warn("record the hub session's state", "err", err)
		}
		s.mu.Lock()
		switch {
		case err == nil && s.last == want:
			s.recording = false
			s.mu.Unlock()
			return
		case err != nil && s.term.Err() != nil:
			// This node no longer leads: whoever leads next records its
			// own session's state.
			s.last, s.recording = sessionState{}, false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if err == nil {
			wait = time.Second // a newer state: recorded at once
			continue
		}
		// Tried again for as long as this node leads: the session may
		// stay up for days without another state to say.
		time.Sleep(wait)
		wait = min(2*wait, 10*time.Second)
	}
}

// Run keeps the session with the hub while this node leads and the site
// is a member (a leader controller).
func (s *Member) Run(ctx context.Context) {
	// Another node may have recorded the session since this one last led:
	// this term's first state is recorded whatever this node said before,
	// within this term.
	s.mu.Lock()
	s.last, s.term = sessionState{}, ctx
	s.mu.Unlock()
	go func() {
		for {
			s.pruneLedger(ctx)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Hour):
			}
		}
	}()
	for ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		txn := s.c.Store().ReadTxn()
		ch, m, err := txn.FirstWatch(tMembership, "id")
		if err != nil {
			return
		}
		ws.Add(ch)
		if m == nil {
			_ = s.c.Store().Watch(ctx, ws)
			continue
		}
		siteID := m.(*Membership).SiteID
		// One membership's sessions, until it is left or replaced, or
		// its certificate or CA set changes; news of the hub's nodes
		// alone is for the next dial.
		mctx, cancel := context.WithCancel(ctx)
		go func() {
			defer cancel()
			was := m.(*Membership)
			for {
				if s.c.Store().Watch(mctx, ws) != nil {
					return
				}
				ws = memdb.NewWatchSet()
				ch, now, err := s.c.Store().ReadTxn().FirstWatch(tMembership, "id")
				if err != nil || now == nil || !sameButNodes(was, now.(*Membership)) {
					return
				}
				ws.Add(ch)
				was = now.(*Membership)
			}
		}()
		run(mctx, func() *Membership { return s.membership() }, s.hubHandler(), func(h Hello) {
			if _, err := s.c.Apply(mctx, MsgHubCA, hubCACmd{SiteID: siteID, CAPEM: h.CAPEM, HubURLs: h.HubURLs}, nil); err != nil {
				s.log.Warn("keep the hub's new CA set and node addresses", "err", err)
			}
		}, s.log, func(up bool, err error) { s.set(ctx, siteID, up, err) }, func(ctx context.Context, hub HubCaller) {
			go s.renew(ctx, hub)
			s.push(ctx, hub)
		})
		cancel()
	}
}

// sameButNodes tells whether two memberships differ in the hub's node
// URLs alone.
func sameButNodes(a, b *Membership) bool {
	x, y := *a, *b
	x.HubURLs, y.HubURLs = nil, nil
	return x.HubURL == y.HubURL && x.SiteID == y.SiteID && x.SiteName == y.SiteName &&
		bytes.Equal(x.CertPEM, y.CertPEM) && bytes.Equal(x.KeyPEM, y.KeyPEM) && bytes.Equal(x.CAPEM, y.CAPEM)
}

// push keeps the hub's copy of the site's inventory current while a
// session is up: read every PushEvery, sent whole when it changed (and
// first on each session, which is how the hub catches up after the site
// was away), its digest alone as a heartbeat otherwise.
func (s *Member) push(ctx context.Context, hub HubCaller) {
	if s.Inventory != nil {
		PushInventory(ctx, hub, s.Inventory, s.PushEvery, s.log)
	}
}

// PushInventory keeps the hub's copy of a site's inventory (read by
// inventory every every) current over one session, until ctx ends: the
// whole when its digest changes, the digest alone every heartbeatEvery.
func PushInventory(ctx context.Context, hub HubCaller, inventory func(context.Context) (*Inventory, error), every time.Duration, log *slog.Logger) {
	var held string // the digest the hub holds
	var heard time.Time
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		inv, err := inventory(ctx)
		switch {
		case err != nil:
			log.Warn("read the inventory for the hub", "err", err)
		case Digest(inv) != held:
			d := Digest(inv)
			if err = hub(ctx, "POST", "/fed/v1/inventory", InventoryPush{Digest: d, Inventory: inv}, nil); err != nil {
				if ctx.Err() == nil {
					log.Warn("send the inventory to the hub", "err", err)
				}
				held = "" // not known to be there: the whole again, no heartbeat for it
				break
			}
			held, heard = d, time.Now()
		}
		if err == nil && held != "" && time.Since(heard) >= heartbeatEvery {
			var ack InventoryPush
			if herr := hub(ctx, "POST", "/fed/v1/inventory", InventoryPush{Digest: held}, &ack); herr != nil {
				held = "" // the whole next time
			} else {
				heard = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
