package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
)

// SampleImageName is what --sample-image is called in the image list.
const SampleImageName = "cairn-test-guest"

// sampleFlavors are created with the sample image when the cluster has no
// flavors yet, so a development appliance can boot a VM at once.
var sampleFlavors = []identity.FlavorSpec{
	{Name: "m1.tiny", VCPUs: 1, RAMMiB: 512, DiskGiB: 1},
	{Name: "m1.small", VCPUs: 1, RAMMiB: 2048, DiskGiB: 20},
}

// seedSample uploads --sample-image as a public image and adds the sample
// flavors if there are none, retrying while the storage pool comes up.
func (a *Agent) seedSample(ctx context.Context) {
	for {
		img, err := a.images.Seed(ctx, SampleImageName, a.cfg.SampleImage)
		if err == nil {
			a.log.Info("sample image ready", "image", img.Name, "id", img.ID)
			break
		}
		a.log.Info("sample image not stored yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
	if len(a.identity.ListFlavors()) > 0 {
		return
	}
	for _, f := range sampleFlavors {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		fl := identity.Flavor{ID: hex.EncodeToString(b), Name: f.Name, VCPUs: f.VCPUs, RAMMiB: f.RAMMiB, DiskGiB: f.DiskGiB, CreatedAt: time.Now().UTC()}
		if _, err := a.node.Apply(ctx, identity.MsgCreateFlavor, fl, nil); err != nil {
			a.log.Warn("create sample flavor", "flavor", f.Name, "err", err)
		}
	}
}
