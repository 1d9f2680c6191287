package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/storage/volume"
)

// newVolumes builds block volumes: this node's replicas, served to writers
// on the cluster port; the provisioner and service the API uses; and the
// server of the volumes attached to this node.
func (a *Agent) newVolumes() {
	log := a.log.With("component", "volumes")
	a.volHost = volume.NewHost(a.disks.Roots, log)
	a.node.HandleRPC(volume.RPCPrefix, a.volHost.Handler())
	prov := volume.NewProvisioner(a.node.RPCClient, a.node.PeerAddr, a.cfg.Name, a.volHost)
	a.volumes = volume.NewService(volume.Deps{Cluster: a.node, Identity: a.identity, VMs: a.compute, Images: a.compute.FindImage,
		Logger: log, Provisioner: prov, ExportAddr: a.cfg.VolumeExportAddr()})
	a.compute.SetVolumes(a.volumes)
	a.volServer = volume.NewNodeServer(a.node, a.volHost, volume.NodeConfig{
		SocketDir: volumeSocketDir(a.cfg.VMRunDir), Fill: a.vms.FillVolume, Quiesce: a.vms.QuiesceVM, Owner: a.vmOwner,
		ScrubEvery: a.cfg.VolumeScrub, ScrubPace: a.cfg.ScrubPace, ExportAddr: a.cfg.VolumeExportAddr(), Log: log})
	a.vms.SetBlock(a.volServer)
	a.compute.SetBlock(a.volServer)
	a.volumes.SetLocal(a.volServer)
	// Replicas on drained or failed disks, or on boxes gone for good, are
	// rebuilt elsewhere.
	repair := volume.NewRepair(a.node, prov, log)
	repair.ScrubEvery = a.cfg.VolumeScrub
	a.node.RegisterController("volume-repair", repair.Run)
	a.node.RegisterController("volume-export-ca", makeOnce(log, "make the volume export CA", func(ctx context.Context) error {
		return volume.EnsureExportCA(ctx, a.node)
	}))
	a.node.RegisterController("migration-ca", makeOnce(log, "make the VM migration CA", func(ctx context.Context) error {
		return hypervisor.EnsureMigrationCA(ctx, a.node)
	}))
	a.metrics.MustRegister(volumeCollector{a.volServer, a.node.Store()})
}

// makeOnce is a leader controller that makes something once, trying
// again every few seconds until it is made.
func makeOnce(log *slog.Logger, what string, make func(context.Context) error) func(context.Context) {
	return func(ctx context.Context) {
		for ctx.Err() == nil {
			err := make(ctx)
			if err == nil {
				return
			}
			log.Warn(what, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
}

// vmOwner is the user a VM's QEMU runs as: the owner of its run
// directory, which the QEMU driver hands to that user.
func (a *Agent) vmOwner(vmID string) (uid, gid int, ok bool) {
	if strings.ContainsAny(vmID, "/.") || vmID == "" {
		return 0, 0, false
	}
	st, err := os.Stat(filepath.Join(a.cfg.VMRunDir, vmID))
	if err != nil {
		return 0, 0, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Uid == 0 {
		return 0, 0, false
	}
	return int(sys.Uid), int(sys.Gid), true
}

// volumeSocketDir is where attached volumes' NBD sockets live: beside the
// VMs' run directory (whose every entry the QEMU driver owns), as short a
// path as the VM sockets.
func volumeSocketDir(vmRunDir string) string { return vmRunDir + "-volumes" }

// runVolumes serves attached volumes and sweeps replicas no volume names,
// once this node's disks are open.
func (a *Agent) runVolumes(ctx context.Context) {
	go func() {
		a.volServer.Run(ctx) // returns once its volumes are flushed and closed
		// Streams to writers are hijacked connections the HTTP server
		// does not close on its own.
		a.volHost.Close()
	}()
	go a.every(a.cfg.GCInterval, "sweep orphan volume replicas", func(ctx context.Context) error {
		if err := a.node.ConsistentRead(ctx); err != nil {
			return err
		}
		return a.volHost.Sweep(ctx, a.volServer.ReplicaKnown)
	})(ctx)
}

var (
	volumeResyncBytes = prometheus.NewDesc("cairn_volume_resync_bytes_total",
		"Bytes this node's writer copied into a volume's replicas to bring them back in sync.", []string{"volume"}, nil)
	volumeRebuildLeft = prometheus.NewDesc("cairn_volume_rebuild_remaining_bytes",
		"Bytes this node's writer has still to copy into a volume's replicas being caught up.", []string{"volume"}, nil)
	volumeReplicas = prometheus.NewDesc("cairn_volume_replicas",
		"A volume's replicas by state (in_sync, stale, rebuilding), as the replicated state records them.", []string{"volume", "state"}, nil)
	volumeScrubbed = prometheus.NewDesc("cairn_volume_scrubbed_bytes_total",
		"Bytes of a volume's copies this node's writer read whole and checked (the volume scrubber).", []string{"volume"}, nil)
	volumeRepairs = prometheus.NewDesc("cairn_volume_repairs_total",
		"Blocks of a volume's copies that failed their checksum and were rewritten from a good copy.", []string{"volume"}, nil)
	volumesDegraded = prometheus.NewDesc("cairn_volumes_degraded",
		"Volumes with a replica that lacks writes: they serve on, with less redundancy.", nil, nil)
)

type volumeCollector struct {
	s     *volume.NodeServer
	store *consensus.Store
}

func (c volumeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{volumeResyncBytes, volumeRebuildLeft, volumeScrubbed, volumeRepairs, volumeReplicas, volumesDegraded} {
		ch <- d
	}
}

func (c volumeCollector) Collect(ch chan<- prometheus.Metric) {
	for id, st := range c.s.Stats() {
		ch <- prometheus.MustNewConstMetric(volumeResyncBytes, prometheus.CounterValue, float64(st.ResyncBytes), id)
		ch <- prometheus.MustNewConstMetric(volumeRebuildLeft, prometheus.GaugeValue, float64(st.RebuildLeft), id)
		ch <- prometheus.MustNewConstMetric(volumeScrubbed, prometheus.CounterValue, float64(st.Scrubbed), id)
		ch <- prometheus.MustNewConstMetric(volumeRepairs, prometheus.CounterValue, float64(st.Repairs), id)
	}
	degraded := 0
	for _, v := range volume.All(c.store.ReadTxn()) {
		n := map[string]int{volume.ReplicaInSync: 0, volume.ReplicaStale: 0, volume.ReplicaRebuilding: 0}
		for _, r := range v.Replicas {
			n[r.State]++
		}
		for state, k := range n {
			ch <- prometheus.MustNewConstMetric(volumeReplicas, prometheus.GaugeValue, float64(k), v.ID, state)
		}
		if v.Viewed().Degraded {
			degraded++
		}
	}
	ch <- prometheus.MustNewConstMetric(volumesDegraded, prometheus.GaugeValue, float64(degraded))
}
