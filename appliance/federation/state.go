package federation

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"slices"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/leafca"
)

// The hub's replicated state: its federation CA, the enrolment tokens it
// handed out (their hashes), the sites, their cached inventories and the
// hub users' roles on them, and intents (intent.go). Commands 512-519 and
// 528-575; 520-527 and 576-599 are a site's.
const (
	MsgFederationCA  consensus.MessageType = 512
	MsgCreateToken   consensus.MessageType = 513
	MsgEnrolSite     consensus.MessageType = 514
	MsgRevokeSite    consensus.MessageType = 515
	MsgSiteInventory consensus.MessageType = 516
	MsgSiteSession   consensus.MessageType = 517
	MsgSetSiteGroup  consensus.MessageType = 518
	MsgSetGrant      consensus.MessageType = 519
)

const (
	tCA        = "federation_ca"
	tTokens    = "federation_tokens"
	tSites     = "federation_sites"
	tInventory = "federation_inventory"
	tGrants    = "federation_grants"
)

// fedCA is the hub's federation CA: it certifies the hub's federation
// listener and every site's client key. It is never the hub's cluster CA,
// whose certificates would pass the hub's own Raft mTLS.
type fedCA struct {
	CertPEM []byte `json:"cert_pem"`
	KeyPEM  []byte `json:"key_pem"`
}

// Token is an enrolment token as the hub keeps it: the hash of its secret,
// never the secret.
type Token struct {
	ID        string    `json:"id"`
	Hash      string    `json:"hash,omitempty"` // hex SHA-256 of the secret
	Site      string    `json:"site"`           // the name the site gets
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// UsedAt is set when a site enrolled with it: a token admits once.
	UsedAt time.Time `json:"used_at,omitzero"`
	// The key it admitted (the SHA-256 of its public key) and the
	// certificate it was given: the same enrolment sent again, its answer
	// lost on the way, gets the same answer.
	KeyHash string `json:"key_hash,omitempty"`
	CertPEM []byte `json:"cert_pem,omitempty"`
}

// Site is an enrolled site.
type Site struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Serials are the serial numbers (hex) of the client certificates
	// the site may connect with: the one it enrolled with, and the next
	// while it renews. Anything else is refused, so revoking is dropping
	// them (no CRL to distribute).
	Serials    []string  `json:"serials,omitempty"`
	EnrolledAt time.Time `json:"enrolled_at"`
	// RevokedAt is set while the site is revoked (by the hub's admin) or
	// has left; enrolling again with a new token lifts it.
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	RevokedBy string    `json:"revoked_by,omitempty"`
	// Group is the site group it is in, if any: roles given on the group
	// reach it.
	Group   string `json:"group,omitempty"`
	Version uint64 `json:"version"`
}

// Active tells whether the site may connect.
func (s *Site) Active() bool { return s.RevokedAt.IsZero() }

type createTokenCmd struct {
	Token Token `json:"token"`
}

type enrolSiteCmd struct {
	TokenID string    `json:"token_id"`
	Hash    string    `json:"hash"`    // of the secret the site gave
	SiteID  string    `json:"site_id"` // for a new site
	Serial  string    `json:"serial"`
	KeyHash string    `json:"key_hash,omitempty"`
	CertPEM []byte    `json:"cert_pem,omitempty"`
	At      time.Time `json:"at"`
}

type revokeSiteCmd struct {
	Site string    `json:"site"`
	By   string    `json:"by"`
	At   time.Time `json:"at"`
}

// Register adds the hub's tables and commands.
func Register(reg *consensus.Registry) {
	consensus.RegisterTable[fedCA](reg, &memdb.TableSchema{Name: tCA, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: consensus.Singleton{}},
	}})
	consensus.RegisterTable[Token](reg, &memdb.TableSchema{Name: tTokens, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}})
	consensus.RegisterTable[Site](reg, &memdb.TableSchema{Name: tSites, Indexes: map[string]*memdb.IndexSchema{
		"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"name": {Name: "name", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
	}})
	consensus.Handle(reg, MsgFederationCA, "SetFederationCA", applyCA)
	registerHubNodes(reg)
	consensus.Handle(reg, MsgCreateToken, "CreateFederationToken", applyCreateToken)
	consensus.Handle(reg, MsgEnrolSite, "EnrolSite", applyEnrolSite)
	consensus.Handle(reg, MsgRevokeSite, "RevokeSite", applyRevokeSite)
	consensus.RegisterTable[SiteInventory](reg, &memdb.TableSchema{Name: tInventory, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "SiteID"}},
	}})
	consensus.RegisterTable[Grant](reg, &memdb.TableSchema{Name: tGrants, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}})
	consensus.HandleSince(reg, MsgSiteInventory, "PushSiteInventory", 8, applyPushInventory)
	consensus.HandleSince(reg, MsgSiteSession, "SetSiteSession", 8, applySession)
	consensus.HandleSince(reg, MsgSetSiteGroup, "SetSiteGroup", 8, applySetSiteGroup)
	consensus.HandleSince(reg, MsgSetGrant, "SetSiteGrant", 8, applySetGrant)
	registerIntents(reg)
	registerRenewal(reg)
}

// applyCA keeps the first CA made: two nodes that both made one agree on
// the one the log ordered first.
func applyCA(tx *consensus.Tx, c *fedCA) (any, error) {
	if consensus.First[fedCA](tx.Txn, tCA, "id") != nil {
		return nil, nil
	}
	if _, err := leafca.Parse(c.CertPEM, c.KeyPEM); err != nil {
		return nil, consensus.Errorf(consensus.CodeInvalid, "federation CA: %v", err)
	}
	return nil, tx.Insert(tCA, c)
}

func applyCreateToken(tx *consensus.Tx, c *createTokenCmd) (any, error) {
	if err := checkSiteName(c.Token.Site); err != nil {
		return nil, err
	}
	if s := consensus.First[Site](tx.Txn, tSites, "name", c.Token.Site); s != nil && s.Active() {
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "site %s is enrolled already: revoke it before it enrols again", c.Token.Site)
	}
	// Tokens past their time are dropped as new ones come.
	it, err := tx.Txn.Get(tTokens, "id")
	if err != nil {
		return nil, err
	}
	var stale []*Token
	for o := it.Next(); o != nil; o = it.Next() {
		if t := o.(*Token); t.ExpiresAt.Before(c.Token.CreatedAt.Add(-24 * time.Hour)) {
			stale = append(stale, t)
		}
	}
	for _, t := range stale {
		if err := tx.Delete(tTokens, t); err != nil {
			return nil, err
		}
	}
	t := c.Token
	return &t, tx.Insert(tTokens, &t)
}

// applyEnrolSite consumes a token and records its site (anew, or again
// after a revocation) with the serial of the certificate it was given.
// Every refusal says the same about the token, so a caller learns nothing
// of tokens it does not hold.
func applyEnrolSite(tx *consensus.Tx, c *enrolSiteCmd) (any, error) {
	t := consensus.First[Token](tx.Txn, tTokens, "id", c.TokenID)
	if t != nil && !t.UsedAt.IsZero() && c.KeyHash != "" && t.KeyHash == c.KeyHash && subtle.ConstantTimeCompare([]byte(t.Hash), []byte(c.Hash)) == 1 {
		return nil, errEnrolledMeanwhile // the same enrolment, sent twice: the first is the answer
	}
	if t == nil || subtle.ConstantTimeCompare([]byte(t.Hash), []byte(c.Hash)) != 1 || !t.UsedAt.IsZero() || !c.At.Before(t.ExpiresAt) {
		return nil, consensus.Errorf(consensus.CodeForbidden, "the enrolment token is unknown, used or expired: create a new one on the hub")
	}
	used := *t
	used.UsedAt, used.KeyHash, used.CertPEM = c.At, c.KeyHash, c.CertPEM
	if err := tx.Insert(tTokens, &used); err != nil {
		return nil, err
	}
	site := Site{ID: c.SiteID, Name: t.Site, EnrolledAt: c.At}
	if cur := consensus.First[Site](tx.Txn, tSites, "name", t.Site); cur != nil {
		switch {
		case cur.Active():
			return nil, consensus.Errorf(consensus.CodeAlreadyExists, "site %s is enrolled already: revoke it before it enrols again", t.Site)
		case cur.ID != c.SiteID:
			// Its certificate names the ID the hub read: read again.
			return nil, consensus.Errorf(consensus.CodeConflict, "site %s changed while it enrolled: try again", t.Site)
		}
		site.Group = cur.Group // back in its group, with the roles given there
	}
	site.Serials = []string{c.Serial}
	site.Version = tx.Index
	return &site, tx.Insert(tSites, &site)
}

func applyRevokeSite(tx *consensus.Tx, c *revokeSiteCmd) (any, error) {
	cur := siteByRef(tx.Txn, c.Site)
	if cur == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "no site %s", c.Site)
	}
	if !cur.Active() {
		return cur, nil
	}
	s := *cur
	s.Serials, s.RevokedAt, s.RevokedBy, s.Version = nil, c.At, c.By, tx.Index
	if inv := consensus.First[SiteInventory](tx.Txn, tInventory, "id", s.ID); inv != nil && inv.Connected {
		next := *inv
		next.Connected = false
		if err := tx.Insert(tInventory, &next); err != nil {
			return nil, err
		}
	}
	return &s, tx.Insert(tSites, &s)
}

// errEnrolledMeanwhile refuses the second of one enrolment sent twice at
// once; the hub answers it with the first's.
var errEnrolledMeanwhile = consensus.NewError(consensus.CodeConflict, "this enrolment was made meanwhile: ask again")

// siteByRef finds a site by ID or name.
func siteByRef(txn *memdb.Txn, ref string) *Site {
	if s := consensus.First[Site](txn, tSites, "id", ref); s != nil {
		return s
	}
	return consensus.First[Site](txn, tSites, "name", ref)
}

// allowed tells whether a site may connect with the certificate of serial.
func allowed(txn *memdb.Txn, siteID, serial string) bool {
	s := consensus.First[Site](txn, tSites, "id", siteID)
	return s != nil && s.Active() && slices.Contains(s.Serials, serial)
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func checkSiteName(name string) error {
	if !nameRE.MatchString(name) {
		return consensus.Errorf(consensus.CodeInvalid, "a site's name is 1-63 lowercase letters, digits and dashes, starting with a letter")
	}
	return nil
}
