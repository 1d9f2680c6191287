package federation

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/consensus"
)

// A site's ledger of the hub's intent steps: each step runs once however
// often the hub sends it (it sends again whenever it did not hear the
// answer). A step is recorded as begun, with the attempt's nonce, before
// it runs, and as ended with its answer after; a step sent again replays
// the answer, or, begun and not ended, is said to be so (the hub asks
// again later, and the step is never run twice). Commands 524-526.
const (
	MsgLedgerBegin consensus.MessageType = 524
	MsgLedgerEnd   consensus.MessageType = 525
	MsgLedgerPrune consensus.MessageType = 526
)

const tLedger = "federation_ledger"

// HeaderIntent names the intent step a call of the hub is (intent ID and
// step, "ID/N"); HeaderIntentState says, on a 409, that the step began
// before and its end is not recorded.
const (
	HeaderIntent      = "Cairn-Intent"
	HeaderIntentState = "Cairn-Intent-State"
	// HeaderIntentDeadline is when the intent expires (RFC 3339): a step
	// that arrives later is not run.
	HeaderIntentDeadline = "Cairn-Intent-Deadline"
	intentBegun          = "begun"   // began earlier; not ended yet
	intentNotRun         = "not-run" // not run now: nothing happened, ask again
	intentUnknown        = "unknown" // began long ago, its end never recorded
)

// stepTimeout bounds a step's run at the site (an image's import takes
// longer, by its size); a step begun and not ended a minute past its
// bound was cut short (a restart) and its outcome is unknown.
const stepTimeout = 10 * time.Minute

// deadline is when the step's run ends at the latest.
func (e *ledgerEntry) deadline() time.Time {
	if e.Until.IsZero() {
		return e.At.Add(stepTimeout)
	}
	return e.Until
}

// ledgerKeep is how long a site remembers a step: longer than an intent
// may wait (MaxIntentTTL).
const ledgerKeep = 2 * MaxIntentTTL

// maxLedgerBody bounds the answer kept for a replay.
const maxLedgerBody = 64 << 10

type ledgerEntry struct {
	ID          string    `json:"id"` // intent ID/step
	Nonce       string    `json:"nonce"`
	Ended       bool      `json:"ended"`
	Status      int       `json:"status,omitempty"`
	ContentType string    `json:"content_type,omitempty"`
	Body        []byte    `json:"body,omitempty"`
	At          time.Time `json:"at"`
	// Until is when the step's run ends at the latest (begun, not ended
	// past it, it was cut short); zero in entries from before it was
	// kept: At plus stepTimeout.
	Until time.Time `json:"until,omitzero"`
}

type ledgerBeginCmd struct {
	ID    string    `json:"id"`
	Nonce string    `json:"nonce"`
	At    time.Time `json:"at"`
	Until time.Time `json:"until,omitzero"`
}

// applyLedgerBegin records a step as begun by the nonce's attempt, and
// answers the entry as it is (another attempt's, if one began first).
func applyLedgerBegin(tx *consensus.Tx, c *ledgerBeginCmd) (any, error) {
	if cur := consensus.First[ledgerEntry](tx.Txn, tLedger, "id", c.ID); cur != nil {
		return cur, nil
	}
	e := ledgerEntry{ID: c.ID, Nonce: c.Nonce, At: c.At, Until: c.Until}
	return &e, tx.Insert(tLedger, &e)
}

type ledgerEndCmd struct {
	ID          string `json:"id"`
	Nonce       string `json:"nonce"`
	Status      int    `json:"status"`
	ContentType string `json:"content_type,omitempty"`
	Body        []byte `json:"body,omitempty"`
}

func applyLedgerEnd(tx *consensus.Tx, c *ledgerEndCmd) (any, error) {
	cur := consensus.First[ledgerEntry](tx.Txn, tLedger, "id", c.ID)
	if cur == nil || cur.Nonce != c.Nonce || cur.Ended {
		return nil, consensus.Errorf(consensus.CodeConflict, "intent step %s is not this attempt's to end", c.ID)
	}
	e := *cur
	e.Ended, e.Status, e.ContentType, e.Body = true, c.Status, c.ContentType, c.Body
	return nil, tx.Insert(tLedger, &e)
}

type ledgerPruneCmd struct {
	Before time.Time `json:"before"`
}

func applyLedgerPrune(tx *consensus.Tx, c *ledgerPruneCmd) (any, error) {
	it, err := tx.Txn.Get(tLedger, "id")
	if err != nil {
		return nil, err
	}
	var old []*ledgerEntry
	for o := it.Next(); o != nil; o = it.Next() {
		if e := o.(*ledgerEntry); e.At.Before(c.Before) {
			old = append(old, e)
		}
	}
	for _, e := range old {
		if err := tx.Delete(tLedger, e); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func registerLedger(reg *consensus.Registry) {
	consensus.RegisterTable[ledgerEntry](reg, &memdb.TableSchema{Name: tLedger, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}})
	consensus.HandleSince(reg, MsgLedgerBegin, "BeginIntentStep", 8, applyLedgerBegin)
	consensus.HandleSince(reg, MsgLedgerEnd, "EndIntentStep", 8, applyLedgerEnd)
	consensus.HandleSince(reg, MsgLedgerPrune, "PruneIntentSteps", 8, applyLedgerPrune)
}

// hubHandler is what the hub reaches through the session: Handler, with
// an intent's steps run once through the ledger.
func (s *Member) hubHandler() http.Handler {
	mux := http.NewServeMux()
	s.imageRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		step := r.Header.Get(HeaderIntent)
		if step == "" {
			s.Handler.ServeHTTP(w, r)
			return
		}
		s.runStep(w, r, step, stepTimeout)
	})
	return mux
}

// runStep runs one intent step once, for timeout at most.
func (s *Member) runStep(w http.ResponseWriter, r *http.Request, step string, timeout time.Duration) {
	ctx := r.Context()
	notRun := func(err error) {
		w.Header().Set(HeaderIntentState, intentNotRun)
		writeError(w, err)
	}
	if s.Ready != nil && !s.Ready() {
		notRun(consensus.Errorf(consensus.CodeUnavailable, "the site is starting"))
		return
	}
	// Known here already: no second begin in the log.
	if cur := consensus.First[ledgerEntry](s.c.Store().ReadTxn(), tLedger, "id", step); cur != nil {
		s.seen(w, cur, step)
		return
	}
	if d := r.Header.Get(HeaderIntentDeadline); d != "" {
		if at, err := time.Parse(time.RFC3339, d); err != nil || !time.Now().Before(at) {
			notRun(consensus.Errorf(consensus.CodeConflict, "intent step %s came after its intent expired", step))
			return
		}
	}
	nonce := newID()
	var e ledgerEntry
	now := time.Now().UTC()
	if _, err := s.c.Apply(ctx, MsgLedgerBegin, ledgerBeginCmd{ID: step, Nonce: nonce, At: now, Until: now.Add(timeout)}, &e); err != nil {
		// Whether it began is read, not guessed: begun by this attempt,
		// it runs; not begun, the hub sends it again.
		if rerr := s.c.ConsistentRead(ctx); rerr != nil {
			notRun(consensus.Errorf(consensus.CodeUnavailable, "record the intent step: %v", err))
			return
		}
		cur := consensus.First[ledgerEntry](s.c.Store().ReadTxn(), tLedger, "id", step)
		if cur == nil {
			notRun(consensus.Errorf(consensus.CodeUnavailable, "record the intent step: %v", err))
			return
		}
		e = *cur
	}
	if e.Nonce != nonce {
		s.seen(w, &e, step)
		return
	}
	// The step runs to its end whatever becomes of the hub's request: its
	// answer is recorded, and replayed when the hub asks again.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	rec := &stepRecorder{header: http.Header{}, status: http.StatusOK}
	s.Handler.ServeHTTP(rec, r.WithContext(rctx))
	e.Ended, e.Status, e.ContentType, e.Body = true, rec.status, rec.header.Get("Content-Type"), rec.body.Bytes()
	if len(e.Body) > maxLedgerBody {
		e.Body = e.Body[:maxLedgerBody]
	}
	// The end is recorded whatever the caller does meanwhile: an answer
	// the hub missed is replayed from it.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for try := 0; ; try++ {
		_, err := s.c.Apply(ectx, MsgLedgerEnd, ledgerEndCmd{ID: step, Nonce: nonce, Status: e.Status, ContentType: e.ContentType, Body: e.Body}, nil)
		if err == nil || consensus.ErrorCode(err) == consensus.CodeConflict || try == 5 {
			if err != nil {
				s.log.Warn("record an intent step's end; the hub will find it begun and not ended", "step", step, "err", err)
			}
			break
		}
		time.Sleep(time.Second)
	}
	replay(w, &e)
}

// seen answers a step another attempt began: its answer if it ended;
// else that it runs still, or, begun too long ago, that its outcome is
// unknown (it was cut short, by a restart, before its end was recorded).
func (s *Member) seen(w http.ResponseWriter, e *ledgerEntry, step string) {
	switch {
	case e.Ended:
		replay(w, e)
	case time.Now().After(e.deadline().Add(time.Minute)):
		w.Header().Set(HeaderIntentState, intentUnknown)
		writeError(w, consensus.Errorf(consensus.CodeConflict, "intent step %s began at %s and its end was never recorded: whether it took effect, the site's audit log says", step, e.At.Format(time.RFC3339)))
	default:
		w.Header().Set(HeaderIntentState, intentBegun)
		writeError(w, consensus.Errorf(consensus.CodeConflict, "intent step %s began before and has not ended yet", step))
	}
}

func replay(w http.ResponseWriter, e *ledgerEntry) {
	if e.ContentType != "" {
		w.Header().Set("Content-Type", e.ContentType)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(e.Body)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(e.Body)
}

// stepRecorder keeps a step's answer for the ledger.
type stepRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *stepRecorder) Header() http.Header         { return r.header }
func (r *stepRecorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *stepRecorder) WriteHeader(code int)        { r.status = code }

// pruneLedger forgets steps older than ledgerKeep, and staged images no
// push touched for long (the leader, hourly).
func (s *Member) pruneLedger(ctx context.Context) {
	s.sweepStaging()
	before := time.Now().UTC().Add(-ledgerKeep)
	it, err := s.c.Store().ReadTxn().Get(tLedger, "id")
	if err != nil {
		return
	}
	old := false
	for o := it.Next(); o != nil && !old; o = it.Next() {
		old = o.(*ledgerEntry).At.Before(before)
	}
	if !old {
		return
	}
	if _, err := s.c.Apply(ctx, MsgLedgerPrune, ledgerPruneCmd{Before: before}, nil); err != nil && ctx.Err() == nil {
		s.log.Warn("prune the intent ledger", "err", err)
	}
}
