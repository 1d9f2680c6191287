package federation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// Image distribution. A hub admin uploads an image to the hub once; it is
// kept by its SHA-256 in the hub node's image directory, and pushed to
// sites: to each site once, whatever its size, in chunks of ChunkSize
// that the site's leader appends to a staging file, each checked against
// its hash, at the rate the push allows (branch uplinks are thin). A
// broken link costs what was in flight: the next session asks the site
// how far it got and goes on from there. When the site holds it all, it
// checks the whole hash and imports it into its own image store as the
// user who pushed it (once, through the site's intent ledger).

// Image commands (hub).
const (
	MsgAddHubImage          consensus.MessageType = 531
	MsgCreateDistributions  consensus.MessageType = 532
	MsgDistributionProgress consensus.MessageType = 533
)

const (
	tHubImages     = "federation_images"
	tDistributions = "federation_distributions"
)

// ChunkSize is the unit of a transfer: what a broken link may cost again.
const ChunkSize = 1 << 20

// maxImageSize bounds an image the hub takes.
const maxImageSize = 64 << 30

// States of a distribution to one site.
const (
	DistPending   = "pending"   // not all sent yet
	DistImporting = "importing" // all there; the site imports it
	DistDone      = "done"
	DistFailed    = "failed"
)

// HubImage is an image the hub holds for sites.
type HubImage struct {
	SHA256     string    `json:"sha256"`
	Name       string    `json:"name"`
	Size       int64     `json:"size"`
	Holders    []string  `json:"holders"` // hub nodes with its bytes
	UploadedBy string    `json:"uploaded_by"`
	CreatedAt  time.Time `json:"created_at"`
}

// Distribution is an image's push to one site.
type Distribution struct {
	ID         string `json:"id"` // image/site ID/push ID
	Image      string `json:"image"`
	Name       string `json:"name"` // the image's name at the site
	SiteID     string `json:"site_id"`
	Site       string `json:"site"`
	Project    string `json:"project"`
	Visibility string `json:"visibility,omitempty"`
	Size       int64  `json:"size"`
	RateKiB    int64  `json:"rate_kib,omitempty"` // per second; 0: unlimited
	UserID     string `json:"user_id"`
	UserName   string `json:"user"`
	State      string `json:"state"`
	// Received is what the site holds, as it last said; Sent what the
	// hub sent in all (a resumed push sends little twice); Resumes how
	// often a push went on from what the site held.
	Received  int64     `json:"received"`
	Sent      int64     `json:"sent"`
	Resumes   int       `json:"resumes"`
	Message   string    `json:"message,omitempty"`
	Note      string    `json:"note,omitempty"`   // Message's code, for pages in other languages
	Result    string    `json:"result,omitempty"` // the site's answer to the import
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

type addHubImageCmd struct {
	Image HubImage `json:"image"`
}

func applyAddHubImage(tx *consensus.Tx, c *addHubImageCmd) (any, error) {
	im := c.Image
	if cur := consensus.First[HubImage](tx.Txn, tHubImages, "id", im.SHA256); cur != nil {
		next := *cur
		next.Holders = slices.Clone(cur.Holders)
		for _, h := range im.Holders {
			if !slices.Contains(next.Holders, h) {
				next.Holders = append(next.Holders, h)
			}
		}
		return &next, tx.Insert(tHubImages, &next)
	}
	if len(im.SHA256) != 64 || im.Size <= 0 {
		return nil, consensus.Errorf(consensus.CodeInvalid, "an image is named by its SHA-256")
	}
	return &im, tx.Insert(tHubImages, &im)
}

type createDistributionsCmd struct {
	Dists []Distribution `json:"dists"`
}

func applyCreateDistributions(tx *consensus.Tx, c *createDistributionsCmd) (any, error) {
	for _, d := range c.Dists {
		if consensus.First[HubImage](tx.Txn, tHubImages, "id", d.Image) == nil {
			return nil, consensus.Errorf(consensus.CodeNotFound, "no image %s on the hub", d.Image)
		}
		if s := consensus.First[Site](tx.Txn, tSites, "id", d.SiteID); s == nil || !s.Active() {
			return nil, consensus.Errorf(consensus.CodeNotFound, "no site %s", d.Site)
		}
		d.State = DistPending
		if err := tx.Insert(tDistributions, &d); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

type distributionProgressCmd struct {
	ID       string    `json:"id"`
	From     string    `json:"from"` // the state it was in
	State    string    `json:"state"`
	Received int64     `json:"received"`
	Sent     int64     `json:"sent"` // more sent since the last record
	Resumed  bool      `json:"resumed,omitempty"`
	Note     string    `json:"note,omitempty"`
	Message  string    `json:"message,omitempty"`
	Result   string    `json:"result,omitempty"`
	At       time.Time `json:"at"`
}

func applyDistributionProgress(tx *consensus.Tx, c *distributionProgressCmd) (any, error) {
	cur := consensus.First[Distribution](tx.Txn, tDistributions, "id", c.ID)
	if cur == nil || cur.State != c.From {
		return nil, consensus.Errorf(consensus.CodeConflict, "the push %s moved on", c.ID)
	}
	d := *cur
	d.State, d.Received, d.Note, d.Message, d.UpdatedAt = c.State, c.Received, c.Note, c.Message, c.At
	d.Sent += c.Sent
	if c.Resumed {
		d.Resumes++
	}
	if c.Result != "" {
		d.Result = c.Result
	}
	return nil, tx.Insert(tDistributions, &d)
}

// distributionDue tells whether a push is to expire (still sending at its
// expiry: one the site imports runs to its end) or be forgotten (settled
// intentKeep ago).
func distributionDue(d *Distribution, now time.Time) bool {
	settled := d.State == DistDone || d.State == DistFailed
	return (d.State == DistPending && !now.Before(d.ExpiresAt)) || (settled && now.After(d.UpdatedAt.Add(intentKeep)))
}

// expireDistributions fails the pushes a site did not get by their
// expiry, and forgets settled ones after intentKeep.
func expireDistributions(tx *consensus.Tx, at time.Time) error {
	it, err := tx.Txn.Get(tDistributions, "id")
	if err != nil {
		return err
	}
	var due []*Distribution
	for o := it.Next(); o != nil; o = it.Next() {
		if d := o.(*Distribution); distributionDue(d, at) {
			due = append(due, d)
		}
	}
	for _, cur := range due {
		if cur.State == DistDone || cur.State == DistFailed {
			if err := tx.Delete(tDistributions, cur); err != nil {
				return err
			}
			continue
		}
		d := *cur
		d.State, d.Note, d.Message, d.UpdatedAt = DistFailed, "expired", "the site was not reached before the push expired", at
		if err := tx.Insert(tDistributions, &d); err != nil {
			return err
		}
	}
	return nil
}

func registerImages(reg *consensus.Registry) {
	consensus.RegisterTable[HubImage](reg, &memdb.TableSchema{Name: tHubImages, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "SHA256"}},
	}})
	consensus.RegisterTable[Distribution](reg, &memdb.TableSchema{Name: tDistributions, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}})
	consensus.HandleSince(reg, MsgAddHubImage, "AddHubImage", 8, applyAddHubImage)
	consensus.HandleSince(reg, MsgCreateDistributions, "CreateDistributions", 8, applyCreateDistributions)
	consensus.HandleSince(reg, MsgDistributionProgress, "RecordDistribution", 8, applyDistributionProgress)
}

// UploadImage keeps an image on this hub node (hub admin), by its hash.
func (h *Hub) UploadImage(ctx context.Context, p *identity.Principal, name string, body io.Reader) (*HubImage, error) {
	const action = "federation.image.upload"
	if !p.IsClusterAdmin() {
		return nil, h.id.Deny(ctx, p, action, name, "", consensus.Errorf(consensus.CodeForbidden, "only hub admins upload images for sites"))
	}
	if !nameRE.MatchString(name) {
		return nil, h.id.Deny(ctx, p, action, name, "", consensus.Errorf(consensus.CodeInvalid, "an image's name is 1-63 lowercase letters, digits and dashes, starting with a letter"))
	}
	if h.ImageDir == "" {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "this hub node keeps no images")
	}
	if err := os.MkdirAll(h.ImageDir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(h.ImageDir, "upload-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name()) // after the rename, nothing
	defer f.Close()
	hash := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, hash), io.LimitReader(body, maxImageSize+1))
	if err != nil {
		return nil, consensus.Errorf(consensus.CodeInvalid, "read the image: %v", err)
	}
	if n == 0 || n > maxImageSize {
		return nil, h.id.Deny(ctx, p, action, name, "", consensus.Errorf(consensus.CodeInvalid, "an image has 1 byte to 64 GiB"))
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	sum := hex.EncodeToString(hash.Sum(nil))
	if err := os.Rename(f.Name(), filepath.Join(h.ImageDir, sum)); err != nil {
		return nil, err
	}
	if err := syncDir(h.ImageDir); err != nil {
		return nil, err
	}
	im := HubImage{SHA256: sum, Name: name, Size: n, Holders: []string{h.c.Name()}, UploadedBy: p.User.Name, CreatedAt: time.Now().UTC()}
	var out HubImage
	if err := h.id.Mutate(ctx, p, action, name, "", MsgAddHubImage, addHubImageCmd{Image: im}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CleanImageDir removes what uploads cut short by a crash left behind
// (at the hub's start, before any upload).
func (h *Hub) CleanImageDir() {
	left, _ := filepath.Glob(filepath.Join(h.ImageDir, "upload-*"))
	for _, f := range left {
		_ = os.Remove(f)
	}
	// A copy from another hub node that went on after the image was
	// whole here (kept otherwise: the copy goes on from it).
	parts, _ := filepath.Glob(filepath.Join(h.ImageDir, "fetch-*"))
	for _, f := range parts {
		if _, err := os.Stat(filepath.Join(h.ImageDir, strings.TrimPrefix(filepath.Base(f), "fetch-"))); err == nil {
			_ = os.Remove(f)
		}
	}
}

// Images lists the images the hub holds.
func (h *Hub) Images() []HubImage {
	out := []HubImage{}
	it, err := h.c.Store().ReadTxn().Get(tHubImages, "id")
	if err != nil {
		return out
	}
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, *o.(*HubImage))
	}
	return out
}

// imageByRef finds an image by hash or name.
func imageByRef(txn *memdb.Txn, ref string) *HubImage {
	if im := consensus.First[HubImage](txn, tHubImages, "id", ref); im != nil {
		return im
	}
	it, err := txn.Get(tHubImages, "id")
	if err != nil {
		return nil
	}
	for o := it.Next(); o != nil; o = it.Next() {
		if im := o.(*HubImage); im.Name == ref {
			return im
		}
	}
	return nil
}

// PushSpec pushes a hub image to sites and groups, into a project of
// each (by name) with a visibility, at most RateKiB KiB/s per site.
type PushSpec struct {
	Sites      []string `json:"sites,omitempty"`
	Groups     []string `json:"groups,omitempty"`
	Project    string   `json:"project"`
	Visibility string   `json:"visibility,omitempty"`
	RateKiB    int64    `json:"rate_kib,omitempty"`
	ExpiresIn  string   `json:"expires_in,omitempty"`
}

// PushImage starts an image's push to sites. The caller needs more than
// read-only on each; the import on each site is done as them.
func (h *Hub) PushImage(ctx context.Context, p *identity.Principal, ref string, spec PushSpec) ([]Distribution, error) {
	const action = "federation.image.push"
	txn := h.c.Store().ReadTxn()
	im := imageByRef(txn, ref)
	if im == nil {
		return nil, h.id.Deny(ctx, p, action, ref, "", consensus.Errorf(consensus.CodeNotFound, "no image %s on the hub", ref))
	}
	if spec.Project == "" || spec.RateKiB < 0 {
		return nil, h.id.Deny(ctx, p, action, ref, "", consensus.Errorf(consensus.CodeInvalid, "a push names the project the image goes into at each site, and a rate of at least 0 KiB/s"))
	}
	ttl := MaxIntentTTL
	if spec.ExpiresIn != "" {
		d, err := time.ParseDuration(spec.ExpiresIn)
		if err != nil || d <= 0 || d > MaxIntentTTL {
			return nil, h.id.Deny(ctx, p, action, ref, "", consensus.Errorf(consensus.CodeInvalid, "expires_in is a duration up to 168h, like 24h"))
		}
		ttl = d
	}
	sites, err := h.targets(txn, p, spec.Sites, spec.Groups)
	if err != nil {
		return nil, h.id.Deny(ctx, p, action, ref, "", err)
	}
	now := time.Now().UTC()
	push := newID()
	var ds []Distribution
	for _, s := range sites {
		ds = append(ds, Distribution{ID: im.SHA256[:16] + "/" + s.SiteID + "/" + push, Image: im.SHA256, Name: im.Name, SiteID: s.SiteID, Site: s.Site,
			Project: spec.Project, Visibility: spec.Visibility, Size: im.Size, RateKiB: spec.RateKiB, UserID: p.User.ID, UserName: p.User.Name,
			CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(ttl)})
	}
	if err := h.id.Mutate(ctx, p, action, fmt.Sprintf("%s to %d sites", im.Name, len(ds)), "", MsgCreateDistributions, createDistributionsCmd{Dists: ds}, nil); err != nil {
		return nil, err
	}
	h.kick()
	for i := range ds {
		ds[i].State = DistPending
	}
	return ds, nil
}

// Distributions lists the pushes of an image (by hash or name; "" for
// all) the caller made, or any for a hub admin.
func (h *Hub) Distributions(p *identity.Principal, ref string) []Distribution {
	txn := h.c.Store().ReadTxn()
	want := ""
	if ref != "" {
		im := imageByRef(txn, ref)
		if im == nil {
			return []Distribution{}
		}
		want = im.SHA256
	}
	out := []Distribution{}
	it, err := txn.Get(tDistributions, "id")
	if err != nil {
		return out
	}
	for o := it.Next(); o != nil; o = it.Next() {
		d := o.(*Distribution)
		if (want == "" || d.Image == want) && (p.IsClusterAdmin() || d.UserID == p.User.ID) {
			out = append(out, *d)
		}
	}
	return out
}

// targets resolves sites and groups to the sites p may change.
func (h *Hub) targets(txn *memdb.Txn, p *identity.Principal, refs, groups []string) ([]IntentSite, error) {
	var sites []IntentSite
	add := func(s *Site) error {
		if slices.ContainsFunc(sites, func(is IntentSite) bool { return is.SiteID == s.ID }) {
			return nil
		}
		switch r := roleOn(txn, p, s); {
		case r == "":
			return consensus.Errorf(consensus.CodeNotFound, "no site %s", s.Name)
		case r == HubReadOnly:
			return consensus.Errorf(consensus.CodeForbidden, "read-only on site %s: an intent changes sites", s.Name)
		case !s.Active():
			return consensus.Errorf(consensus.CodeConflict, "site %s is revoked", s.Name)
		}
		sites = append(sites, IntentSite{SiteID: s.ID, Site: s.Name})
		return nil
	}
	for _, ref := range refs {
		s := siteByRef(txn, ref)
		if s == nil {
			return nil, consensus.Errorf(consensus.CodeNotFound, "no site %s", ref)
		}
		if err := add(s); err != nil {
			return nil, err
		}
	}
	for _, g := range groups {
		it, err := txn.Get(tSites, "id")
		if err != nil {
			return nil, err
		}
		n := 0
		for o := it.Next(); o != nil; o = it.Next() {
			// A group is the sites of it the caller has a role on: the
			// others are not theirs to see, nor to be named to them.
			if s := o.(*Site); s.Group == g && s.Active() && roleOn(txn, p, s) != "" {
				if err := add(s); err != nil {
					return nil, err
				}
				n++
			}
		}
		if n == 0 {
			return nil, consensus.Errorf(consensus.CodeNotFound, "no enrolled site in group %s", g)
		}
	}
	if len(sites) == 0 {
		return nil, consensus.Errorf(consensus.CodeInvalid, "an intent is for 1 to %d sites", maxIntentSites)
	}
	return sites, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
