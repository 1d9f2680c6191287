package federation

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// Intents are the hub's bulk operations: the same calls of the sites'
// APIs (steps, in order) on many sites, as the user who made the intent,
// each site at its own pace. A site that is away gets them when it comes
// back, until the intent expires; each step runs once on a site however
// often it is sent (the site's ledger), and the intent keeps every site's
// answers. A client's key makes creating one idempotent.

// Intent commands (hub).
const (
	MsgCreateIntent  consensus.MessageType = 528
	MsgIntentStep    consensus.MessageType = 529
	MsgExpireIntents consensus.MessageType = 530
)

const (
	tIntents     = "federation_intents"
	tIntentSites = "federation_intent_sites" // one row per intent and site
)

// Limits of an intent.
const (
	MaxIntentTTL     = 7 * 24 * time.Hour
	DefaultIntentTTL = 24 * time.Hour
	maxIntentSteps   = 20
	maxIntentSites   = 5000
	// intentKeep is how long an intent is kept after it expired.
	intentKeep = 7 * 24 * time.Hour
	// maxResultBody bounds a step's answer kept on the hub.
	maxResultBody = 4 << 10
)

// States of an intent on one site (and of the intent: pending while any
// site is, else done when every one is, else failed).
const (
	IntentPending = "pending"
	IntentDone    = "done"
	IntentFailed  = "failed"
	IntentExpired = "expired"
)

// IntentStep is one call of a site's API.
type IntentStep struct {
	Method string          `json:"method"`
	Path   string          `json:"path"` // /api/v1/...
	Body   json.RawMessage `json:"body,omitempty"`
}

// StepResult is a site's answer to a step.
type StepResult struct {
	Status int    `json:"status"`
	Body   string `json:"body,omitempty"`
}

// IntentSite is an intent's progress on one site: a row of its own, so
// that recording one site's step copies one site's progress, not every
// site's.
type IntentSite struct {
	IntentID string       `json:"intent_id"`
	Order    int          `json:"order"` // the site's place in the intent
	SiteID   string       `json:"site_id"`
	Site     string       `json:"site"`
	State    string       `json:"state"`
	Done     int          `json:"steps_done"`
	Results  []StepResult `json:"results,omitempty"`
	// Message says why a pending site waits, or why it failed.
	Message   string    `json:"message,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// Intent is a bulk operation.
type Intent struct {
	ID        string       `json:"id"`
	Key       string       `json:"key,omitempty"`
	KeyID     string       `json:"key_id,omitempty"` // user ID/key: a key is the user's own
	UserID    string       `json:"user_id"`
	UserName  string       `json:"user"`
	CreatedAt time.Time    `json:"created_at"`
	ExpiresAt time.Time    `json:"expires_at"`
	Steps     []IntentStep `json:"steps"`
	// Sites is every site's progress, in the intent's order: kept as rows
	// of their own (tIntentSites), filled in where one intent is shown.
	Sites []IntentSite `json:"sites,omitempty"`
	// How many sites the intent is for, and how many are in each state.
	Total   int    `json:"sites_total"`
	Pending int    `json:"sites_pending"`
	Done    int    `json:"sites_done"`
	Failed  int    `json:"sites_failed"` // failed or expired
	Seq     uint64 `json:"seq"`          // the hub log's order of making: a site runs its intents in it
	Version uint64 `json:"version"`
}

// State is the intent's as a whole.
func (in *Intent) State() string {
	switch {
	case in.Pending > 0:
		return IntentPending
	case in.Failed > 0:
		return IntentFailed
	}
	return IntentDone
}

// count moves one site of the intent from state from ("": none, a new
// site) to state to.
func (in *Intent) count(from, to string) {
	add := func(state string, d int) {
		switch state {
		case "":
		case IntentPending:
			in.Pending += d
		case IntentDone:
			in.Done += d
		default:
			in.Failed += d
		}
	}
	add(from, -1)
	add(to, 1)
}

// intentSite is one site's row of an intent.
func intentSite(txn *memdb.Txn, intentID, siteID string) *IntentSite {
	return consensus.First[IntentSite](txn, tIntentSites, "id", intentID, siteID)
}

// intentSites is every site's row of an intent, in the intent's order.
func intentSites(txn *memdb.Txn, intentID string) []IntentSite {
	out := []IntentSite{}
	it, err := txn.Get(tIntentSites, "intent", intentID)
	if err != nil {
		return out
	}
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, *o.(*IntentSite))
	}
	slices.SortFunc(out, func(a, b IntentSite) int { return a.Order - b.Order })
	return out
}

// MarshalJSON adds the intent's state.
func (in Intent) MarshalJSON() ([]byte, error) {
	type plain Intent
	return json.Marshal(struct {
		plain
		State string `json:"state"`
	}{plain(in), in.State()})
}

// keyID is an intent's key as its maker's.
func keyID(userID, key string) string {
	if key == "" {
		return ""
	}
	return userID + "/" + key
}

type createIntentCmd struct {
	Intent Intent `json:"intent"`
}

func applyCreateIntent(tx *consensus.Tx, c *createIntentCmd) (any, error) {
	in := c.Intent
	in.KeyID = keyID(in.UserID, in.Key)
	if k := in.KeyID; k != "" {
		if cur := consensus.First[Intent](tx.Txn, tIntents, "key", k); cur != nil {
			out := *cur // made already: the same answer
			out.Sites = intentSites(tx.Txn, cur.ID)
			return &out, nil
		}
	}
	if err := checkSteps(in.Steps); err != nil {
		return nil, err
	}
	if len(in.Sites) == 0 || len(in.Sites) > maxIntentSites {
		return nil, consensus.Errorf(consensus.CodeInvalid, "an intent is for 1 to %d sites", maxIntentSites)
	}
	sites := in.Sites
	in.Sites, in.Total, in.Pending, in.Done, in.Failed = nil, len(sites), 0, 0, 0
	for i := range sites {
		s := consensus.First[Site](tx.Txn, tSites, "id", sites[i].SiteID)
		if s == nil || !s.Active() {
			return nil, consensus.Errorf(consensus.CodeNotFound, "no site %s", sites[i].Site)
		}
		if intentSite(tx.Txn, in.ID, s.ID) != nil {
			return nil, consensus.Errorf(consensus.CodeInvalid, "site %s is named twice", s.Name)
		}
		row := IntentSite{IntentID: in.ID, Order: i, SiteID: s.ID, Site: sites[i].Site, State: IntentPending, UpdatedAt: in.CreatedAt}
		if err := tx.Insert(tIntentSites, &row); err != nil {
			return nil, err
		}
		in.count("", IntentPending)
	}
	in.Seq, in.Version = tx.Index, tx.Index
	if err := tx.Insert(tIntents, &in); err != nil {
		return nil, err
	}
	out := in
	out.Sites = intentSites(tx.Txn, in.ID)
	return &out, nil
}

func checkSteps(steps []IntentStep) error {
	if len(steps) == 0 || len(steps) > maxIntentSteps {
		return consensus.Errorf(consensus.CodeInvalid, "an intent has 1 to %d steps", maxIntentSteps)
	}
	for _, st := range steps {
		switch {
		case st.Method != "POST" && st.Method != "PUT" && st.Method != "PATCH" && st.Method != "DELETE":
			return consensus.Errorf(consensus.CodeInvalid, "an intent's step is a POST, PUT, PATCH or DELETE, not %q", st.Method)
		case !SiteAPIPath(st.Path):
			return consensus.Errorf(consensus.CodeInvalid, "an intent's step calls a path of the site's API, /api/v1/..., not %q", st.Path)
		case len(st.Body) > 0 && !json.Valid(st.Body):
			return consensus.Errorf(consensus.CodeInvalid, "an intent's step body is not valid JSON")
		}
	}
	return nil
}

// intentStepCmd records a site's progress on an intent: a step's answer
// (Result; the step is then done), and the site's state after it. Only
// the step the record says is next advances: a late or repeated record
// changes nothing.
type intentStepCmd struct {
	IntentID string      `json:"intent_id"`
	SiteID   string      `json:"site_id"`
	Step     int         `json:"step"`
	Result   *StepResult `json:"result,omitempty"`
	State    string      `json:"state"`
	Message  string      `json:"message,omitempty"`
	At       time.Time   `json:"at"`
}

func applyIntentStep(tx *consensus.Tx, c *intentStepCmd) (any, error) {
	cur := consensus.First[Intent](tx.Txn, tIntents, "id", c.IntentID)
	if cur == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "no intent %s", c.IntentID)
	}
	row := intentSite(tx.Txn, c.IntentID, c.SiteID)
	// An answer that came as the intent expired still counts: the step
	// ran (the site refuses steps past the deadline it is sent).
	late := row != nil && row.State == IntentExpired && c.Result != nil
	if row == nil || (row.State != IntentPending && !late) || row.Done != c.Step {
		return nil, consensus.Errorf(consensus.CodeConflict, "intent %s moved on at this site", c.IntentID)
	}
	s := *row
	s.Results = slices.Clone(row.Results)
	if c.Result != nil {
		s.Results = append(s.Results, *c.Result)
		s.Done++
	}
	s.State, s.Message, s.UpdatedAt = c.State, c.Message, c.At
	if late {
		s.State = IntentExpired
		s.Message = fmt.Sprintf("step %d ran as the intent expired; the steps after it did not", c.Step+1)
	}
	if s.State == IntentPending && s.Done == len(cur.Steps) {
		s.State = IntentDone
	}
	if err := tx.Insert(tIntentSites, &s); err != nil {
		return nil, err
	}
	in := *cur
	in.count(row.State, s.State)
	in.Version = tx.Index
	return &in, tx.Insert(tIntents, &in)
}

type expireIntentsCmd struct {
	At time.Time `json:"at"`
}

// applyExpireIntents marks the sites an expired intent still waits for
// as expired, and forgets intents long expired.
func applyExpireIntents(tx *consensus.Tx, c *expireIntentsCmd) (any, error) {
	it, err := tx.Txn.Get(tIntents, "id")
	if err != nil {
		return nil, err
	}
	var change, drop []*Intent
	for o := it.Next(); o != nil; o = it.Next() {
		in := o.(*Intent)
		switch {
		case c.At.After(in.ExpiresAt.Add(intentKeep)):
			drop = append(drop, in)
		case !c.At.Before(in.ExpiresAt) && in.State() == IntentPending:
			change = append(change, in)
		}
	}
	for _, in := range drop {
		for _, row := range intentSites(tx.Txn, in.ID) {
			if err := tx.Delete(tIntentSites, &row); err != nil {
				return nil, err
			}
		}
		if err := tx.Delete(tIntents, in); err != nil {
			return nil, err
		}
	}
	if err := expireDistributions(tx, c.At); err != nil {
		return nil, err
	}
	for _, cur := range change {
		in := *cur
		for _, row := range intentSites(tx.Txn, in.ID) {
			if row.State != IntentPending {
				continue
			}
			row.State, row.UpdatedAt = IntentExpired, c.At
			if row.Message == "" {
				row.Message = "the site was not reached before the intent expired"
			}
			if err := tx.Insert(tIntentSites, &row); err != nil {
				return nil, err
			}
			in.count(IntentPending, IntentExpired)
		}
		in.Version = tx.Index
		if err := tx.Insert(tIntents, &in); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func registerIntents(reg *consensus.Registry) {
	consensus.RegisterTable[Intent](reg, &memdb.TableSchema{Name: tIntents, Indexes: map[string]*memdb.IndexSchema{
		"id":  {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"key": {Name: "key", Unique: true, AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "KeyID"}},
	}})
	consensus.RegisterTable[IntentSite](reg, &memdb.TableSchema{Name: tIntentSites, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
			&memdb.StringFieldIndex{Field: "IntentID"}, &memdb.StringFieldIndex{Field: "SiteID"}}}},
		"intent": {Name: "intent", Indexer: &memdb.StringFieldIndex{Field: "IntentID"}},
		"site":   {Name: "site", Indexer: &memdb.StringFieldIndex{Field: "SiteID"}},
		"state":  {Name: "state", Indexer: &memdb.StringFieldIndex{Field: "State"}},
	}})
	consensus.HandleSince(reg, MsgCreateIntent, "CreateIntent", 8, applyCreateIntent)
	consensus.HandleSince(reg, MsgIntentStep, "RecordIntentStep", 8, applyIntentStep)
	consensus.HandleSince(reg, MsgExpireIntents, "ExpireIntents", 8, applyExpireIntents)
	registerImages(reg)
}

// IntentSpec is a bulk operation as a user asks for it: steps on sites
// (by ID or name) and the sites of groups.
type IntentSpec struct {
	Key       string       `json:"key,omitempty"` // the client's, for retries: the same key, the same intent
	Sites     []string     `json:"sites,omitempty"`
	Groups    []string     `json:"groups,omitempty"`
	Steps     []IntentStep `json:"steps"`
	ExpiresIn string       `json:"expires_in,omitempty"` // a Go duration, up to 168h; 24h by default
}

// CreateIntent queues a bulk operation. The caller needs more than
// read-only on every site it names (a group names its sites now); the
// steps run as the caller, with the role they have on each site when
// each step runs.
func (h *Hub) CreateIntent(ctx context.Context, p *identity.Principal, spec IntentSpec) (*Intent, error) {
	const action = "federation.intent.create"
	ttl := DefaultIntentTTL
	if spec.ExpiresIn != "" {
		d, err := time.ParseDuration(spec.ExpiresIn)
		if err != nil || d <= 0 || d > MaxIntentTTL {
			return nil, h.id.Deny(ctx, p, action, spec.Key, "", consensus.Errorf(consensus.CodeInvalid, "expires_in is a duration up to 168h, like 24h"))
		}
		ttl = d
	}
	if len(spec.Key) > 128 {
		return nil, h.id.Deny(ctx, p, action, spec.Key, "", consensus.Errorf(consensus.CodeInvalid, "an intent's key is at most 128 characters"))
	}
	if err := checkSteps(spec.Steps); err != nil {
		return nil, h.id.Deny(ctx, p, action, spec.Key, "", err)
	}
	if err := h.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	txn := h.c.Store().ReadTxn()
	if spec.Key != "" {
		if cur := consensus.First[Intent](txn, tIntents, "key", keyID(p.User.ID, spec.Key)); cur != nil {
			out := *cur
			out.Sites = intentSites(txn, cur.ID)
			return &out, nil
		}
	}
	sites, err := h.targets(txn, p, spec.Sites, spec.Groups)
	if err != nil {
		return nil, h.id.Deny(ctx, p, action, spec.Key, "", err)
	}
	now := time.Now().UTC()
	in := Intent{ID: newID(), Key: spec.Key, UserID: p.User.ID, UserName: p.User.Name, CreatedAt: now, ExpiresAt: now.Add(ttl), Steps: spec.Steps, Sites: sites}
	var out Intent
	if err := h.id.Mutate(ctx, p, action, fmt.Sprintf("%d sites", len(sites)), "", MsgCreateIntent, createIntentCmd{Intent: in}, &out); err != nil {
		return nil, err
	}
	h.kick()
	return &out, nil
}

// IntentPage is a page of intents, newest first.
type IntentPage struct {
	Intents []Intent `json:"intents"`
	// Next, when more are older, is the before of the next page.
	Next uint64 `json:"next,omitempty"`
}

// DefaultIntentPage and MaxIntentPage bound a page of intents.
const (
	DefaultIntentPage = 100
	MaxIntentPage     = 1000
)

// Intents lists intents, newest first, without their sites' rows (their
// counts say how far they are; GetIntent has the rows): a hub admin's,
// all; anyone else's, their own. A page holds up to limit intents made
// before the intent whose Seq is before (0: the newest).
func (h *Hub) Intents(p *identity.Principal, before uint64, limit int) IntentPage {
	if limit <= 0 {
		limit = DefaultIntentPage
	}
	limit = min(limit, MaxIntentPage)
	page := IntentPage{Intents: []Intent{}}
	it, err := h.c.Store().ReadTxn().Get(tIntents, "id")
	if err != nil {
		return page
	}
	var all []*Intent
	for o := it.Next(); o != nil; o = it.Next() {
		if in := o.(*Intent); (p.IsClusterAdmin() || in.UserID == p.User.ID) && (before == 0 || in.Seq < before) {
			all = append(all, in)
		}
	}
	slices.SortFunc(all, func(a, b *Intent) int { return cmp.Compare(b.Seq, a.Seq) })
	for i, in := range all {
		if i == limit {
			page.Next = all[i-1].Seq
			break
		}
		page.Intents = append(page.Intents, *in)
	}
	return page
}

// GetIntent is one intent with every site's progress, the caller's own
// (or any, for a hub admin).
func (h *Hub) GetIntent(p *identity.Principal, id string) (*Intent, error) {
	txn := h.c.Store().ReadTxn()
	in := consensus.First[Intent](txn, tIntents, "id", id)
	if in == nil || (!p.IsClusterAdmin() && in.UserID != p.User.ID) {
		return nil, consensus.Errorf(consensus.CodeNotFound, "no intent %s", id)
	}
	out := *in
	out.Sites = intentSites(txn, id)
	return &out, nil
}

// ExpireIntents marks what expired intents still wait for as expired (a
// leader controller's work).
func (h *Hub) ExpireIntents(ctx context.Context) error {
	now := time.Now().UTC()
	it, err := h.c.Store().ReadTxn().Get(tIntents, "id")
	if err != nil {
		return err
	}
	due := false
	for o := it.Next(); o != nil && !due; o = it.Next() {
		in := o.(*Intent)
		due = (!now.Before(in.ExpiresAt) && in.State() == IntentPending) || now.After(in.ExpiresAt.Add(intentKeep))
	}
	if dit, err := h.c.Store().ReadTxn().Get(tDistributions, "id"); err == nil {
		for o := dit.Next(); o != nil && !due; o = dit.Next() {
			due = distributionDue(o.(*Distribution), now)
		}
	}
	if !due {
		return nil
	}
	_, err = h.c.Apply(ctx, MsgExpireIntents, expireIntentsCmd{At: now}, nil)
	return err
}

// httpOK tells whether a site's status is a success.
func httpOK(status int) bool {
	return status >= 200 && status < 300 || status == http.StatusNotModified
}
