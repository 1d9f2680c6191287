package agent

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

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
	a.volumes = volume.NewService(volume.Deps{Cluster: a.node, Identity: a.identity, VMs: a.findVM, Logger: log, Provisioner: prov})
	a.volServer = volume.NewNodeServer(a.node, a.volHost, volume.NodeConfig{
		SocketDir: volumeSocketDir(a.cfg.VMRunDir), Log: log})
	a.metrics.MustRegister(volumeCollector{a.volServer})
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

var volumeResyncBytes = prometheus.NewDesc("cairn_volume_resync_bytes_total",
	"Bytes this node's writer copied into a volume's replicas to bring them back in sync.", []string{"volume"}, nil)

type volumeCollector struct{ s *volume.NodeServer }

func (c volumeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- volumeResyncBytes }

func (c volumeCollector) Collect(ch chan<- prometheus.Metric) {
	for id, st := range c.s.Stats() {
		ch <- prometheus.MustNewConstMetric(volumeResyncBytes, prometheus.CounterValue, float64(st.ResyncBytes), id)
	}
}
