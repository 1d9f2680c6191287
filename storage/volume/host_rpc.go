package volume

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// The control calls are JSON POSTs on the cluster port; the data path is
// the replica protocol on "stream/{id}".
const (
	hostStreamPath = RPCPrefix + "stream/"
	hostCreatePath = RPCPrefix + "replicas/create"
	hostRemovePath = RPCPrefix + "replicas/remove"
	hostResizePath = RPCPrefix + "replicas/resize"
	hostMaxRPCBody = 64 << 10
)

type provCreateReq struct {
	Replica string `json:"replica"`
	Disk    string `json:"disk"`
	Size    int64  `json:"size"`
	Layered bool   `json:"layered,omitempty"`
}

type provRemoveReq struct {
	Replica string `json:"replica"`
}

type provResizeReq struct {
	Replica string `json:"replica"`
	Epoch   uint64 `json:"epoch"`
	Size    int64  `json:"size"`
}

// Handler serves the replica protocol and the Provisioner's calls. Mount
// it with consensus.Node.HandleRPC(RPCPrefix, h.Handler()): the cluster
// port admits only nodes with a certificate of the cluster CA.
func (h *Host) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+hostStreamPath+"{id}", h.serveStream)
	mux.HandleFunc("POST "+hostCreatePath, func(w http.ResponseWriter, r *http.Request) {
		var req provCreateReq
		if hostReadJSON(w, r, &req) {
			hostWriteResult(w, h.Create(req.Disk, req.Replica, req.Size, req.Layered))
		}
	})
	mux.HandleFunc("POST "+hostRemovePath, func(w http.ResponseWriter, r *http.Request) {
		var req provRemoveReq
		if hostReadJSON(w, r, &req) {
			hostWriteResult(w, h.Remove(req.Replica))
		}
	})
	mux.HandleFunc("POST "+hostResizePath, func(w http.ResponseWriter, r *http.Request) {
		var req provResizeReq
		if hostReadJSON(w, r, &req) {
			hostWriteResult(w, h.resize(r.Context(), req.Replica, req.Epoch, req.Size))
		}
	})
	return mux
}

// resize grows replicaID to size bytes at epoch: DiskReplica.Resize's
// rules (an older epoch is ErrFenced, a newer one becomes the replica's,
// durably, as with Fence), and at most the largest volume.
func (h *Host) resize(ctx context.Context, replicaID string, epoch uint64, size int64) error {
	if size <= 0 || size%BlockSize != 0 || size > maxReplicaSize {
		return fmt.Errorf("resize replica %s to %d: not a positive multiple of %d up to %d: %w", replicaID, size, BlockSize, int64(maxReplicaSize), syscall.EINVAL)
	}
	t, err := h.Local(replicaID)
	if err != nil {
		return fmt.Errorf("resize replica %s: %w", replicaID, err)
	}
	if err := t.Resize(ctx, epoch, size); err != nil {
		return fmt.Errorf("resize replica %s: %w", replicaID, err)
	}
	return nil
}

// serveStream upgrades the request to the replica protocol.
func (h *Host) serveStream(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), wireUpgrade) {
		hostWriteResult(w, fmt.Errorf("upgrade to %s required: %w", wireUpgrade, syscall.EINVAL))
		return
	}
	// A replica not here is answered before the upgrade, so Dial
	// returns ErrNoReplica.
	if _, err := h.Local(r.PathValue("id")); err != nil {
		hostWriteResult(w, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot upgrade", http.StatusInternalServerError)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	// The server's header deadline must not cut a long-lived stream (nor
	// the wait for the older ones to end).
	_ = conn.SetDeadline(time.Time{})
	// attach returns once every older stream of the replica has ended.
	t, st, detach, err := h.attach(r.PathValue("id"), conn, r.URL.Query().Get("access") == "read")
	if err != nil {
		// Removed meanwhile: the client sees the connection end.
		return
	}
	defer detach()
	if _, err := conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + wireUpgrade + "\r\n\r\n")); err != nil {
		return
	}
	log := h.log.With("replica", r.PathValue("id"), "peer", r.RemoteAddr)
	closeFn := func() { conn.Close() }
	if err := serveReplicaStoppable(context.WithoutCancel(r.Context()), t, buf.Reader, conn, closeFn, &st.stopped, log); err != nil && !st.stopped.Load() {
		log.Warn("replica stream ended", "err", err)
	}
}

func hostReadJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, hostMaxRPCBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		hostWriteResult(w, fmt.Errorf("decode request: %v: %w", err, syscall.EINVAL))
		return false
	}
	return true
}

// hostWriteResult answers a control call: {} or the error's wireError, with a
// status a human reading logs understands.
func hostWriteResult(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err == nil {
		_, _ = io.WriteString(w, "{}\n")
		return
	}
	e := wireErrorOf(err)
	status := http.StatusInternalServerError
	switch {
	case e.Code == repNoReplica:
		status = http.StatusNotFound
	case e.Code == repFenced:
		status = http.StatusConflict
	case e.Code == repErrno && syscall.Errno(e.Errno) == syscall.EINVAL:
		status = http.StatusBadRequest
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e)
}

// decodeHostError reads a control call's error answer.
func decodeHostError(res *http.Response, e *wireError) error {
	if mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type")); mt != "application/json" {
		return errors.New("not a JSON answer")
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, hostMaxRPCBody)).Decode(e); err != nil {
		return err
	}
	if e.Code == repOK || e.Code > repOther {
		return fmt.Errorf("error code %d", e.Code)
	}
	return nil
}

// Provisioner creates, removes and resizes replicas on any node: over the
// cluster port, or directly for this node's own Host.
type ReplicaProvisioner struct {
	client func() *http.Client
	addr   func(node string) (string, bool)
	self   string
	host   *Host
}

// NewProvisioner returns a Provisioner calling other nodes with client (the
// node's RPC client) at addr(node) (their cluster address); calls for self
// go to host.
func NewProvisioner(client func() *http.Client, addr func(node string) (string, bool), self string, host *Host) *ReplicaProvisioner {
	return &ReplicaProvisioner{client: client, addr: addr, self: self, host: host}
}

// Create makes a replica of size bytes on node's disk diskID, layered
// over a snapshot or not (idempotent).
func (p *ReplicaProvisioner) Create(ctx context.Context, node, diskID, replicaID string, size int64, layered bool) error {
	if node == p.self && p.host != nil {
		return p.host.Create(diskID, replicaID, size, layered)
	}
	return p.post(ctx, node, hostCreatePath, provCreateReq{Replica: replicaID, Disk: diskID, Size: size, Layered: layered})
}

// Remove deletes a replica from node (idempotent).
func (p *ReplicaProvisioner) Remove(ctx context.Context, node, replicaID string) error {
	if node == p.self && p.host != nil {
		return p.host.Remove(replicaID)
	}
	return p.post(ctx, node, hostRemovePath, provRemoveReq{Replica: replicaID})
}

// Resize grows a replica on node to size bytes, with the volume's epoch.
func (p *ReplicaProvisioner) Resize(ctx context.Context, node, replicaID string, epoch uint64, size int64) error {
	if node == p.self && p.host != nil {
		return p.host.resize(ctx, replicaID, epoch, size)
	}
	return p.post(ctx, node, hostResizePath, provResizeReq{Replica: replicaID, Epoch: epoch, Size: size})
}

func (p *ReplicaProvisioner) post(ctx context.Context, node, path string, body any) error {
	addr, ok := p.addr(node)
	client := p.client()
	if !ok || client == nil {
		return fmt.Errorf("replica call to node %s: not reachable", node)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("replica call to node %s: %w", node, err)
	}
	defer res.Body.Close()
	// A body read to EOF lets the transport reuse the connection.
	defer func() { _, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4096)) }()
	if res.StatusCode == http.StatusOK {
		return nil
	}
	var e wireError
	if err := decodeHostError(res, &e); err != nil {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("replica call to node %s: %s: %s", node, res.Status, strings.TrimSpace(string(msg)))
	}
	return fmt.Errorf("node %s: %w", node, e.err())
}
