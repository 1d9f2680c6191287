package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// A live migration's switchover (live.go): the source's guest is paused,
// and before the source hands the VM over it asks the target, over the
// cluster port, whether it is ready to take it. The target's worker
// answers from what it alone knows: its QEMU receives this migration and
// is alive, and the node has not fenced itself. One round trip on a kept
// connection, where the two-step switchover waited for two commits and
// two wake-ups.

// MigrationRPCPrefix is where MigrationRPC is mounted on the cluster port.
const MigrationRPCPrefix = "/hypervisor/v1/migration/"

// askTimeout bounds one question to the target; the source asks again
// until switchWait has passed since its guest paused.
const askTimeout = time.Second

// targetNo is a final no: this migration cannot switch over there, and
// asking again will not change that.
type targetNo struct{ error }

// errOldTarget: the target's agent predates the question (and the
// one-step switchover); the source switches over in two steps.
var errOldTarget = errors.New("the target's agent does not know the one-step switchover")

// takesHeader, in a target's yes, says what it takes beyond what the
// question itself shows; takesPausedCopy: it resumes a guest that its
// source paused for the whole copy (pausedCopy), which QEMU leaves paused
// on the target. Agents before it let such a guest wait and then boot it
// afresh.
const (
	takesHeader     = "Cairn-Migration-Takes"
	takesPausedCopy = "paused-copy"
)

// readyAsk is a source's question, carried to the target's worker.
type readyAsk struct {
	id    string
	reply chan error
}

// MigrationRPC answers the sources of live migrations to this node. The
// cluster port admits only nodes with a certificate of the cluster CA,
// whose common name is the node's name.
func (a *NodeAgent) MigrationRPC() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+MigrationRPCPrefix+"{vm}/{id}/ready", func(w http.ResponseWriter, r *http.Request) {
		from := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			from = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		err := a.readyFor(r.Context(), from, r.PathValue("vm"), r.PathValue("id"))
		var no targetNo
		switch {
		case err == nil:
			w.Header().Set(takesHeader, takesPausedCopy)
			w.WriteHeader(http.StatusNoContent)
		case errors.As(err, &no):
			http.Error(w, err.Error(), http.StatusConflict)
		default:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
	return mux
}

// readyFor says whether this node is ready to take over VM vmID from
// node from in migration id.
func (a *NodeAgent) readyFor(ctx context.Context, from, vmID, id string) error {
	// What this node's copy of the state does not show yet (it lags, or
	// the agent has just started) may be there in a moment: not a no.
	vm := getVM(a.c.Store().ReadTxn(), vmID)
	switch {
	case vm == nil || vm.Migration == nil || vm.Migration.ID != id:
		return fmt.Errorf("%s has no live migration %s of VM %s under way", a.cfg.Name, id, vmID)
	case vm.Migration.Target != a.cfg.Name || vm.Migration.Source != from:
		return targetNo{fmt.Errorf("migration %s runs from %s to %s: %s cannot ask %s", id, vm.Migration.Source, vm.Migration.Target, from, a.cfg.Name)}
	}
	a.mu.Lock()
	wk := a.workers[vmID]
	a.mu.Unlock()
	if wk == nil {
		return fmt.Errorf("%s has no worker for VM %s yet", a.cfg.Name, vm.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	q := readyAsk{id: id, reply: make(chan error, 1)}
	select {
	case wk.asks <- q:
	case <-ctx.Done():
		return fmt.Errorf("the worker of VM %s on %s is busy", vm.Name, a.cfg.Name)
	}
	select {
	case err := <-q.reply:
		return err
	case <-ctx.Done():
		return fmt.Errorf("the worker of VM %s on %s did not answer", vm.Name, a.cfg.Name)
	}
}

// readyFor is the target's worker's answer, from its own goroutine.
func (w *worker) readyFor(id string) error {
	if w.in != id || w.inst == nil {
		return targetNo{fmt.Errorf("%s is not receiving migration %s", w.n.cfg.Name, id)}
	}
	select {
	case <-w.inst.Exited():
		return targetNo{fmt.Errorf("the QEMU receiving the VM on %s exited", w.n.cfg.Name)}
	default:
	}
	if w.n.isFenced.Load() {
		return targetNo{fmt.Errorf("%s has lost contact with the cluster and fenced itself", w.n.cfg.Name)}
	}
	w.heard = time.Now() // the source is there: no silence to time out
	return nil
}

// askTarget asks the migration's target whether it is ready to take the
// VM over: nil is yes, a targetNo is a final no, any other error may pass.
func (w *worker) askTarget(ctx context.Context, vm *VM) error {
	_, err := w.ask(ctx, vm)
	return err
}

// targetTakesPausedCopy asks the target, before the source pauses its
// guest for the copy, whether it will resume it: nil if it will. An older
// agent would not, and the VM would boot afresh there; the move is then
// refused rather than made with the guest running, which under TCG can
// lose its memory writes. A target that cannot be asked is asked again,
// for a few seconds.
func (w *worker) targetTakesPausedCopy(ctx context.Context, vm *VM) error {
	var err error
	for try := 0; try < 4; try++ {
		var takes string
		takes, err = w.ask(ctx, vm)
		var no targetNo
		switch {
		case err == nil && strings.Contains(takes, takesPausedCopy):
			return nil
		case err == nil, errors.Is(err, errOldTarget):
			return fmt.Errorf("%s runs an older Cairn agent, which cannot take a VM running in software emulation (tcg) with its guest paused for the copy: upgrade it first, or move the VM stopped", vm.Migration.Target)
		case errors.As(err, &no):
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("could not ask %s whether it takes the VM paused for its copy: %w", vm.Migration.Target, err)
}

// ask is askTarget, also returning what the target says it takes
// (takesHeader) with its yes.
func (w *worker) ask(ctx context.Context, vm *VM) (string, error) {
	m := vm.Migration
	p := w.n.cfg.Peers
	if p == nil {
		return "", targetNo{errors.New("this node cannot reach other nodes' agents")}
	}
	addr, ok := p.PeerAddr(m.Target)
	client := p.RPCClient()
	if !ok || client == nil {
		return "", fmt.Errorf("%s is not reachable", m.Target)
	}
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", "https://"+addr+MigrationRPCPrefix+url.PathEscape(vm.ID)+"/"+url.PathEscape(m.ID)+"/ready", nil)
	if err != nil {
		return "", err
	}
	res, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
	switch res.StatusCode {
	case http.StatusNoContent:
		return res.Header.Get(takesHeader), nil
	case http.StatusNotFound:
		return "", errOldTarget
	case http.StatusConflict:
		return "", targetNo{fmt.Errorf("%s cannot take the VM over: %s", m.Target, strings.TrimSpace(string(msg)))}
	default:
		return "", fmt.Errorf("%s: %s: %s", m.Target, res.Status, strings.TrimSpace(string(msg)))
	}
}

// warm asks the target now, its answer moot, so that the connection (and
// its TLS handshake) is there when the guest is paused: at the stream's
// start and with each progress report, as an idle connection is closed
// after a while.
func (w *worker) warm(ctx context.Context, vm *VM) {
	go func(vm VM) { _ = w.askTarget(ctx, &vm) }(*vm)
}
