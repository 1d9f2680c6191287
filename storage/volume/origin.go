package volume

import (
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
)

// Origin is what a volume made from a snapshot, or as a clone, started
// as. A volume's Parent alone does not say: snapshotting the volume
// layers it on its own new snapshot, and a clone's parent is a hidden
// snapshot taken for it.
type Origin struct {
	// Snapshot is the snapshot it was made from, "" for a clone or when
	// that snapshot was deleted since (its data stays, hidden).
	Snapshot   string `json:"snapshot,omitempty"`
	SnapshotID string `json:"snapshot_id,omitempty"`
	// Volume is the volume that snapshot was taken of, VolumeName "" when
	// that volume was deleted since.
	Volume     string    `json:"volume"`
	VolumeName string    `json:"volume_name,omitempty"`
	At         time.Time `json:"at"` // when the snapshot was taken
}

// Origin tells what volume ref was made from, as recorded when it was
// made. nil when it was made blank or from an image.
func (s *Service) Origin(p *identity.Principal, ref string) (*Origin, error) {
	v, err := s.Get(p, ref)
	if err != nil || v.MadeFrom == nil {
		return nil, err
	}
	txn := s.c.Store().ReadTxn()
	m := v.MadeFrom
	o := &Origin{Volume: m.Of, At: m.At}
	if sn := getVolume(txn, m.Snapshot); sn != nil && !sn.Hidden {
		o.Snapshot, o.SnapshotID = sn.Name, sn.ID
	}
	if of := getVolume(txn, m.Of); of != nil && of.Kind == "" {
		o.VolumeName = of.Name
	}
	return o, nil
}
