package identity

import (
	"context"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Settings are identity's cluster-wide settings, which a cluster admin sets.
type Settings struct {
	ID string `json:"-"` // always settingsID: the table has one row
	// MaxTokenLifetimeSeconds bounds every API token's lifetime. A token
	// asked for without an expiry gets the maximum; a token from before the
	// maximum existed (or was lowered) expires this long after its creation.
	MaxTokenLifetimeSeconds int64  `json:"max_token_lifetime_seconds"`
	Version                 uint64 `json:"version"`
}

// MaxTokenLifetime is the maximum as a duration.
func (s Settings) MaxTokenLifetime() time.Duration {
	return time.Duration(s.MaxTokenLifetimeSeconds) * time.Second
}

// DefaultSettings hold until a cluster admin changes them.
var DefaultSettings = Settings{ID: settingsID, MaxTokenLifetimeSeconds: int64(90 * 24 * time.Hour / time.Second)}

// MsgSetSettings replaces identity's settings.
const MsgSetSettings consensus.MessageType = 54

const (
	tSettings  = "identity_settings"
	settingsID = "identity"
)

type setSettingsCmd struct {
	Settings Settings `json:"settings"`
	IfMatch  uint64   `json:"if_match,omitempty"`
}

func registerSettings(reg *consensus.Registry) {
	consensus.RegisterTable[Settings](reg, &memdb.TableSchema{Name: tSettings, Indexes: map[string]*memdb.IndexSchema{"id": idIndex()}})
	consensus.Handle(reg, MsgSetSettings, "SetIdentitySettings", func(tx *consensus.Tx, c *setSettingsCmd) (any, error) {
		if err := checkVersion("identity settings", "", settingsIn(tx.Txn).Version, c.IfMatch); err != nil {
			return nil, err
		}
		row := c.Settings
		row.ID = settingsID
		row.Version = tx.Index
		return &row, tx.Insert(tSettings, &row)
	})
}

func settingsIn(txn *memdb.Txn) Settings {
	if s := consensus.First[Settings](txn, tSettings, "id", settingsID); s != nil {
		return *s
	}
	return DefaultSettings
}

// expiresAt is when a token stops working: its own expiry, but an API token
// never outlives the cluster's maximum lifetime from its creation (so a
// token created without an expiry before the maximum existed now has one).
func expiresAt(t *Token, st Settings) time.Time {
	if t.Kind != TokenAPI || st.MaxTokenLifetimeSeconds <= 0 {
		return t.ExpiresAt
	}
	limit := t.CreatedAt.Add(st.MaxTokenLifetime())
	if t.ExpiresAt.IsZero() || t.ExpiresAt.After(limit) {
		return limit
	}
	return t.ExpiresAt
}

// Settings returns identity's cluster settings.
func (s *Service) Settings() Settings { return settingsIn(s.read()) }

// SetSettings changes identity's cluster settings (cluster admins only).
func (s *Service) SetSettings(ctx context.Context, p *Principal, in Settings, ifMatch uint64) (*Settings, error) {
	const action = "identity.settings.update"
	if !p.IsClusterAdmin() {
		return nil, s.deny(ctx, p, action, "identity", "", forbidden("change identity settings"))
	}
	const tenYears = int64(10 * 365 * 24 * time.Hour / time.Second)
	if in.MaxTokenLifetimeSeconds < 3600 || in.MaxTokenLifetimeSeconds > tenYears {
		return nil, s.deny(ctx, p, action, "identity", "", consensus.Errorf(consensus.CodeInvalid,
			"max_token_lifetime_seconds must be between 3600 (an hour) and %d (ten years)", tenYears))
	}
	var out Settings
	if err := s.mutate(ctx, p, action, "identity", "", MsgSetSettings, setSettingsCmd{Settings: in, IfMatch: ifMatch}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
