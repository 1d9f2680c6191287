package identity

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// The audit log lives in two places. The replicated state keeps the newest
// entries (Config.AuditRetention), queryable from any node through the API.
// Every node also appends every entry it sees to an archive on its own data
// disk, so pruning the state never loses history and memory stays bounded.

type pruneAuditCmd struct {
	Before string `json:"before"` // delete entries with a smaller ID
}

func applyPruneAudit(tx *consensus.Tx, c *pruneAuditCmd) (any, error) {
	it, err := tx.Get(tAudit, "id")
	if err != nil {
		return nil, err
	}
	var old []*AuditEntry
	for obj := it.Next(); obj != nil; obj = it.Next() {
		e := obj.(*AuditEntry)
		if e.ID >= c.Before {
			break
		}
		old = append(old, e)
	}
	for _, e := range old {
		if err := tx.Delete(tAudit, e); err != nil {
			return nil, err
		}
	}
	return len(old), nil
}

// PruneAudit trims the replicated audit log to the newest AuditRetention
// entries once it is 10% over. The leader runs it periodically.
func (s *Service) PruneAudit(ctx context.Context) (int, error) {
	keep := s.cfg.AuditRetention
	if keep <= 0 {
		return 0, nil
	}
	txn := s.read()
	it, err := txn.ReverseLowerBound(tAudit, "id", "~")
	if err != nil {
		return 0, err
	}
	n, before := 0, ""
	for obj := it.Next(); obj != nil; obj = it.Next() {
		n++
		if n == keep {
			before = obj.(*AuditEntry).ID
		}
	}
	if n <= keep+keep/10 {
		return 0, nil
	}
	var pruned int
	_, err = s.c.Apply(ctx, MsgPruneAudit, pruneAuditCmd{Before: before}, &pruned)
	return pruned, err
}

// ArchiveAudit appends every audit entry this node sees to dir/audit.jsonl
// (fsynced per batch) until ctx ends. It resumes after the last archived
// entry, and logs a gap if entries were pruned before it could archive them
// (they are in the other nodes' archives).
func (s *Service) ArchiveAudit(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("audit archive: %w", err)
	}
	path := filepath.Join(dir, "audit.jsonl")
	last, err := lastArchivedID(path)
	if err != nil {
		return fmt.Errorf("audit archive: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit archive: %w", err)
	}
	defer f.Close()
	// Only a node that was down or new can have missed entries: check once.
	if it, err := s.read().Get(tAudit, "id"); err == nil {
		if oldest, _ := it.Next().(*AuditEntry); oldest != nil && oldest.ID > last && last != "" &&
			consensus.First[AuditEntry](s.read(), tAudit, "id", last) == nil {
			s.log.Warn("audit entries may have been pruned before this node archived them; other nodes' archives hold them",
				"archived_until", last, "state_starts_at", oldest.ID)
		}
	}
	for {
		ws := memdb.NewWatchSet()
		txn := s.read()
		// A LowerBound iterator cannot be watched; a watch on the whole table can.
		whole, err := txn.Get(tAudit, "id")
		if err != nil {
			return err
		}
		ws.Add(whole.WatchCh())
		it, err := txn.LowerBound(tAudit, "id", last+"\x00")
		if err != nil {
			return err
		}
		w := bufio.NewWriter(f)
		wrote := 0
		for obj := it.Next(); obj != nil; obj = it.Next() {
			e := obj.(*AuditEntry)
			b, _ := json.Marshal(e)
			w.Write(append(b, '\n'))
			last = e.ID
			wrote++
		}
		if wrote > 0 {
			if err := w.Flush(); err != nil {
				return fmt.Errorf("audit archive: %w", err)
			}
			if err := f.Sync(); err != nil {
				return fmt.Errorf("audit archive: %w", err)
			}
		}
		if err := s.c.Store().Watch(ctx, ws); err != nil {
			return nil // ctx ended
		}
		select {
		case <-time.After(50 * time.Millisecond): // batch bursts into one fsync
		case <-ctx.Done():
			return nil
		}
	}
}

// lastArchivedID reads the ID of the last complete line of the archive.
func lastArchivedID(path string) (string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return "", nil
	} else if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	size := st.Size()
	if size == 0 {
		return "", nil
	}
	buf := make([]byte, min(size, 64<<10))
	if _, err := f.ReadAt(buf, size-int64(len(buf))); err != nil && err != io.EOF {
		return "", err
	}
	lines := bytes.Split(bytes.TrimRight(buf, "\n"), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		var e AuditEntry
		if json.Unmarshal(lines[i], &e) == nil && e.ID != "" {
			return e.ID, nil
		}
	}
	return "", nil
}

// Record audits an event that changes no replicated state, such as a console
// session opening or closing: who (userID), from where (the context's
// remote address), on what, and a message made from a literal format (the
// message's ID in the pages' catalogues, as an error's is). It fails if the cluster cannot
// store the entry, so the caller can refuse what it could not audit.
func (s *Service) Record(ctx context.Context, userID, action, resource, projectID, format string, args ...any) error {
	var p *Principal
	if u := consensus.First[User](s.read(), tUsers, "id", userID); u != nil {
		p = &Principal{User: *u}
	} else {
		p = &Principal{User: User{ID: userID}}
	}
	e := s.auditEntry(ctx, p, action, resource, projectID)
	e.Result = "success"
	e.Message = fmt.Sprintf(format, args...)
	e.Format, e.Args = format, consensus.Params(format, args...) // the detail's ID and parameters, for pages in another language
	if _, err := s.c.Apply(ctx, MsgRecordAudit, e, nil); err != nil {
		return fmt.Errorf("record %s: %w", action, err)
	}
	return nil
}
