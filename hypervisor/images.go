package hypervisor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/storage"
)

// ImageBucket is the system bucket that holds image bytes.
const ImageBucket = ".images"

// ObjectStore is the part of storage.Objects images use.
type ObjectStore interface {
	EnsureSystemBucket(ctx context.Context, name string) error
	PutSystem(ctx context.Context, bucket, key string, size int64, body io.Reader) (*storage.Object, error)
	HeadSystem(ctx context.Context, bucket, key string) (*storage.Object, error)
	Read(ctx context.Context, obj *storage.Object, off, n int64, w io.Writer) error
	DeleteSystem(ctx context.Context, bucket, key string) error
}

// Images is Glance's role: image records in Raft, bytes in the object store.
type Images struct {
	c       Cluster
	id      *identity.Service
	objects ObjectStore
	qemuImg []string // argv prefix of qemu-img
	tmp     string   // where uploads are spooled and converted
	maxSize int64
	reserve storage.Reserve
	log     *slog.Logger
}

// ImagesConfig configures image handling on a node.
type ImagesConfig struct {
	QEMUImg []string // default {"qemu-img"}
	TempDir string   // spool for uploads; needs room for an image and its conversion
	MaxSize int64    // largest upload accepted, bytes
	// Reserve is the control plane's floor: the spool stops short of it.
	Reserve storage.Reserve
	Logger  *slog.Logger
}

// NewImages returns the image service.
func NewImages(c Cluster, id *identity.Service, objects ObjectStore, cfg ImagesConfig) *Images {
	if len(cfg.QEMUImg) == 0 {
		cfg.QEMUImg = []string{"qemu-img"}
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = 64 << 30
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Images{c: c, id: id, objects: objects, qemuImg: cfg.QEMUImg, tmp: cfg.TempDir, maxSize: cfg.MaxSize, reserve: cfg.Reserve, log: cfg.Logger}
}

// ImageSpec is what an uploader says about an image.
type ImageSpec struct {
	Name        string `json:"name"`
	Project     string `json:"project,omitempty"`    // name or ID; default: the caller's only project
	Visibility  string `json:"visibility,omitempty"` // default project
	MinDiskGiB  int64  `json:"min_disk_gib,omitempty"`
	MinRAMMiB   int64  `json:"min_ram_mib,omitempty"`
	OSType      string `json:"os_type,omitempty"`
	OSVersion   string `json:"os_version,omitempty"`
	Description string `json:"description,omitempty"`
	Firmware    string `json:"firmware,omitempty"` // bios (default) or uefi
}

func (s *ImageSpec) validate() error {
	if !nameRE.MatchString(s.Name) {
		return consensus.Errorm(consensus.CodeInvalid, "name_rule", "image name %q must be 1-63 letters, digits, dots, dashes or underscores", s.Name)
	}
	if s.Visibility == "" {
		s.Visibility = VisibilityProject
	}
	if s.Visibility != VisibilityPrivate && s.Visibility != VisibilityProject && s.Visibility != VisibilityPublic {
		return invalid("visibility must be private, project or public, not %q", s.Visibility)
	}
	if s.Firmware == "" {
		s.Firmware = "bios"
	}
	if s.Firmware != "bios" && s.Firmware != "uefi" {
		return invalid("firmware must be bios or uefi, not %q", s.Firmware)
	}
	if s.MinDiskGiB < 0 || s.MinRAMMiB < 0 || len(s.Description) > 1024 || len(s.OSType) > 64 || len(s.OSVersion) > 64 {
		return invalid("minimum sizes must not be negative; description at most 1024 bytes; OS type and version at most 64")
	}
	return nil
}

// Get returns an image the caller can see, by ID or by name. A name is
// looked up among the images of the caller's own projects first, then among
// public ones, then (for a cluster admin) among other projects' images; two
// images of one of these tiers with the name are ambiguous, never a guess.
func (im *Images) Get(p *identity.Principal, ref string) (*Image, error) {
	txn := im.c.Store().ReadTxn()
	if img := consensus.First[Image](txn, tImages, "id", ref); img != nil && visible(p, img) {
		return img, nil
	}
	var own, public, other []Image
	for _, img := range im.list(p) {
		switch {
		case img.Name != ref:
		case img.Visibility == VisibilityPublic:
			public = append(public, img)
		case p.RoleIn(img.ProjectID) != "":
			own = append(own, img)
		default:
			other = append(other, img)
		}
	}
	return pickImage(ref, own, public, other)
}

// ForVM returns the image a new VM of project may boot from, by ID or by
// name: a name means the project's own image first, else a public one,
// never another project's (a project image cannot be booted elsewhere,
// even by a cluster admin who can see it, and a public name cannot be
// shadowed by another project's upload).
func (im *Images) ForVM(p *identity.Principal, project, ref string) (*Image, error) {
	txn := im.c.Store().ReadTxn()
	if img := consensus.First[Image](txn, tImages, "id", ref); img != nil {
		if bootableIn(p, img, project) {
			return img, nil
		}
		return nil, elsewhere(p, img, ref)
	}
	var own, public []Image
	var other *Image
	for _, img := range im.list(p) {
		switch {
		case img.Name != ref:
		case !bootableIn(p, &img, project):
			other = &img
		case img.ProjectID == project:
			own = append(own, img)
		default:
			public = append(public, img)
		}
	}
	if len(own) == 0 && len(public) == 0 && other != nil {
		return nil, elsewhere(p, other, ref)
	}
	return pickImage(ref, own, public)
}

// elsewhere is the refusal of an image another project's VMs may not boot:
// not found, and said plainly to a caller who can see the image anyway.
func elsewhere(p *identity.Principal, img *Image, ref string) error {
	if !visible(p, img) {
		return notFound("image", ref)
	}
	return consensus.Errorf(consensus.CodeNotFound, "image %q belongs to another project: a VM boots from its own project's images or public ones", ref)
}

// pickImage returns the one image of the first non-empty tier.
func pickImage(ref string, tiers ...[]Image) (*Image, error) {
	for _, found := range tiers {
		switch len(found) {
		case 0:
			continue
		case 1:
			return &found[0], nil
		}
		return nil, invalid("%d images are named %q: use the image's ID", len(found), ref)
	}
	return nil, notFound("image", ref)
}

func (im *Images) list(p *identity.Principal) []Image {
	out := []Image{}
	it, err := im.c.Store().ReadTxn().Get(tImages, "id")
	if err != nil {
		return out
	}
	for o := it.Next(); o != nil; o = it.Next() {
		if img := o.(*Image); visible(p, img) {
			out = append(out, *img)
		}
	}
	return out
}

// List returns the images the caller can see whose name, OS or description
// contains query (all of them for an empty query), by name.
func (im *Images) List(p *identity.Principal, query string) []Image {
	out := []Image{}
	q := strings.ToLower(query)
	for _, img := range im.list(p) {
		hay := strings.ToLower(img.Name + " " + img.OSType + " " + img.OSVersion + " " + img.Description)
		if q == "" || strings.Contains(hay, q) {
			out = append(out, img)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Upload stores an image read from body. The image appears only once its
// bytes are durable in the object store; on any failure nothing is left.
func (im *Images) Upload(ctx context.Context, p *identity.Principal, spec ImageSpec, body io.Reader) (*Image, error) {
	return im.add(ctx, p, spec, "", body)
}

// CheckRoom refuses an upload of size bytes (if known, > 0) before it is
// spooled: past the project's object quota, or larger than what this
// node's spool can hold with a converted copy beside it.
func (im *Images) CheckRoom(ctx context.Context, p *identity.Principal, spec ImageSpec, size int64) error {
	if size <= 0 {
		return nil
	}
	if size > im.maxSize {
		return invalid("the image is larger than the %d GiB limit", im.maxSize>>30)
	}
	if pr, err := (&Service{id: im.id}).project(p, spec.Project); err == nil {
		if q, err := im.id.GetQuota(p, pr.ID); err == nil && q.Limits.ObjectGiB != identity.Unlimited {
			if need := (size + 1<<30 - 1) >> 30; q.Usage.ObjectGiB+need > q.Limits.ObjectGiB {
				return im.id.Deny(ctx, p, "image.create", spec.Name, pr.ID, consensus.Errorf(consensus.CodeQuotaExceeded,
					"quota exceeded for object storage in project %s: limit %d GiB, in use %d, this image needs %d", pr.Name, q.Limits.ObjectGiB, q.Usage.ObjectGiB, need))
			}
		}
	}
	if err := os.MkdirAll(im.tmp, 0o700); err != nil {
		return err
	}
	return im.spoolRoom(2 * uint64(size))
}

// spoolRoom refuses to spool need more bytes if they would not fit above
// the control plane's floor.
func (im *Images) spoolRoom(need uint64) error {
	sp, err := im.reserve.Space(im.tmp)
	if err != nil {
		return fmt.Errorf("measure the image spool: %w", err)
	}
	if need > sp.Usable() {
		return consensus.Errorf(storage.CodeInsufficientStorage, "this node has %d MiB free for images above the %d MiB kept for the control plane; this image needs %d MiB (with its converted copy); try another node",
			sp.Usable()>>20, sp.Floor>>20, (need+1<<20-1)>>20)
	}
	return nil
}

// Import fetches an image from an HTTP(S) URL, typically a file server on
// the hospital's network, and stores it like an upload.
func (im *Images) Import(ctx context.Context, p *identity.Principal, spec ImageSpec, src string) (*Image, error) {
	// Who may import is settled before what: a caller with no right to
	// the project learns nothing from the validation of the rest.
	if err := im.authorize(ctx, p, &spec, "image.import"); err != nil {
		return nil, err
	}
	u, err := url.Parse(src)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, im.id.Deny(ctx, p, "image.import", spec.Name, spec.Project, invalid("import needs an http:// or https:// URL, not %q", src))
	}
	client := &http.Client{Transport: &http.Transport{DialContext: im.dialLAN, Proxy: nil}, Timeout: 6 * time.Hour}
	req, err := http.NewRequestWithContext(ctx, "GET", src, nil)
	if err != nil {
		return nil, invalid("import %s: %v", src, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, invalid("import %s: %v", src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, invalid("import %s: the server answered %s", src, resp.Status)
	}
	if err := im.CheckRoom(ctx, p, spec, resp.ContentLength); err != nil {
		return nil, err // a quota refusal is audited by CheckRoom
	}
	return im.add(ctx, p, spec, src, resp.Body)
}

// dialLAN connects an import to a file server on the hospital's network
// and nowhere else Cairn can reach that a user could not: not this node's
// own addresses (its API, metrics, debug port), not loopback or link-local,
// and not the VM networks (other projects' VMs). The check runs on every
// resolved address, redirects included.
func (im *Images) dialLAN(ctx context.Context, network, addr string) (net.Conn, error) {
	var vmNets []netip.Prefix
	for _, nw := range netfabric.ListNetworks(im.c.Store().ReadTxn()) {
		vmNets = append(vmNets, nw.Prefix())
	}
	own, _ := net.InterfaceAddrs()
	d := &net.Dialer{Timeout: 10 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("refusing to import from %s", address)
		}
		ip := ap.Addr().Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast() {
			return fmt.Errorf("refusing to import from %s: not a LAN address", ip)
		}
		for _, a := range own {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip.AsSlice()) {
				return fmt.Errorf("refusing to import from %s: an address of this node", ip)
			}
		}
		for _, p := range vmNets {
			if p.Contains(ip) {
				return fmt.Errorf("refusing to import from %s: a VM network", ip)
			}
		}
		return nil
	}}
	return d.DialContext(ctx, network, addr)
}

func (im *Images) authorize(ctx context.Context, p *identity.Principal, spec *ImageSpec, action string) error {
	if err := spec.validate(); err != nil {
		return im.id.Deny(ctx, p, action, spec.Name, "", err)
	}
	pr, err := (&Service{id: im.id}).project(p, spec.Project)
	if err != nil {
		return im.id.Deny(ctx, p, action, spec.Name, "", err)
	}
	spec.Project = pr.ID
	if !p.Can(pr.ID, identity.RoleMember) {
		return im.id.Deny(ctx, p, action, spec.Name, pr.ID, consensus.Errorf(consensus.CodeForbidden, "not allowed to add images to project %s", pr.Name))
	}
	if spec.Visibility == VisibilityPublic && !mayPublish(p) {
		return im.id.Deny(ctx, p, action, spec.Name, pr.ID, consensus.Errorf(consensus.CodeForbidden, "only cluster admins publish images to everyone"))
	}
	return nil
}

func (im *Images) add(ctx context.Context, p *identity.Principal, spec ImageSpec, source string, body io.Reader) (*Image, error) {
	const action = "image.create"
	if source == "" {
		if err := im.authorize(ctx, p, &spec, action); err != nil {
			return nil, err
		}
	}
	img := Image{ID: newID("img"), Name: spec.Name, ProjectID: spec.Project, OwnerID: p.User.ID, Visibility: spec.Visibility,
		MinDiskGiB: spec.MinDiskGiB, MinRAMMiB: spec.MinRAMMiB, OSType: spec.OSType, OSVersion: spec.OSVersion,
		Description: spec.Description, Firmware: spec.Firmware, Source: source, CreatedAt: time.Now().UTC()}
	out, err := im.store(ctx, &img, body, func(img, out *Image) error {
		return im.id.Mutate(ctx, p, action, img.Name, img.ProjectID, MsgCreateImage, img, out)
	})
	var refused refusal
	if errors.As(err, &refused) {
		return nil, im.id.Deny(ctx, p, action, spec.Name, spec.Project, refused.error)
	}
	return out, err
}

// refusal is an image store refused before its record was proposed (the
// caller audits it; a rejected record is audited by Mutate).
type refusal struct{ error }

// store checks, converts and stores an image's bytes, then commits its
// record with commit. On any failure nothing is left: neither the spooled
// file nor the object.
func (im *Images) store(ctx context.Context, img *Image, body io.Reader, commit func(img, out *Image) error) (*Image, error) {
	if err := os.MkdirAll(im.tmp, 0o700); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(im.tmp, "upload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	stored, err := im.prepare(ctx, work, body, img)
	if err != nil {
		if consensus.ErrorCode(err) != "" {
			return nil, refusal{err}
		}
		return nil, err
	}
	f, err := os.Open(stored)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := im.objects.EnsureSystemBucket(ctx, ImageBucket); err != nil {
		return nil, fmt.Errorf("store image: %w", err)
	}
	if _, err := im.objects.PutSystem(ctx, ImageBucket, img.ID, img.Size, f); err != nil {
		if errors.Is(err, storage.ErrNoSpace) {
			return nil, refusal{consensus.Errorf(storage.CodeInsufficientStorage, "store image: %v", err)}
		}
		if errors.Is(err, storage.ErrUnavailable) {
			return nil, refusal{consensus.Errorf(consensus.CodeUnavailable, "store image: %v", err)}
		}
		return nil, fmt.Errorf("store image: %w", err)
	}
	var out Image
	if err := commit(img, &out); err != nil {
		// Not acknowledged is not always not committed (the leader may
		// have changed mid-way): never delete the bytes of a record that
		// exists.
		bg := context.WithoutCancel(ctx)
		if rerr := im.c.ConsistentRead(bg); rerr != nil || consensus.First[Image](im.c.Store().ReadTxn(), tImages, "id", img.ID) != nil {
			return nil, err
		}
		if derr := im.objects.DeleteSystem(bg, ImageBucket, img.ID); derr != nil {
			im.log.Warn("image record refused and its bytes not removed", "image", img.ID, "err", derr)
		}
		return nil, err
	}
	return &out, nil
}

// Seed adds a public image owned by no project from a local file, unless an
// image of that name exists: the sample image of a development appliance.
func (im *Images) Seed(ctx context.Context, name, path string) (*Image, error) {
	if err := im.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	it, err := im.c.Store().ReadTxn().Get(tImages, "id")
	if err != nil {
		return nil, err
	}
	for o := it.Next(); o != nil; o = it.Next() {
		if o.(*Image).Name == name {
			return o.(*Image), nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img := Image{ID: newID("img"), Name: name, Visibility: VisibilityPublic, OSType: "linux", Firmware: "bios",
		Description: "Cairn's test guest: prints its name and address on the serial console and answers on TCP port 8080",
		Source:      "file://" + path, CreatedAt: time.Now().UTC()}
	out, err := im.store(ctx, &img, f, func(img, out *Image) error {
		_, err := im.c.Apply(ctx, MsgCreateImage, img, out)
		return err
	})
	var refused refusal
	if errors.As(err, &refused) {
		return nil, refused.error
	}
	return out, err
}

// prepare spools the upload, detects and checks its format, converts raw to
// qcow2 and fills in the image's size, virtual size and checksum. It
// returns the file to store.
func (im *Images) prepare(ctx context.Context, work string, body io.Reader, img *Image) (string, error) {
	src, n, format, info, err := im.spool(ctx, work, body)
	if err != nil {
		return "", err
	}
	img.Format = format
	stored := src
	switch format {
	case FormatISO:
		img.DiskFormat, img.VirtualSize = FormatISO, n
	case FormatQCOW2, FormatRaw:
		if format == FormatRaw {
			// The qcow2 copy is at most as large as the raw image.
			if err := im.spoolRoom(uint64(n)); err != nil {
				return "", err
			}
			stored = filepath.Join(work, "converted.qcow2")
			if out, err := im.run(ctx, "convert", "-f", "raw", "-O", "qcow2", src, stored); err != nil {
				return "", fmt.Errorf("convert raw image to qcow2: %s", firstLine(out, err))
			}
			_ = os.Remove(src)
		}
		img.DiskFormat, img.VirtualSize = FormatQCOW2, info.VirtualSize
	}
	sum, size, err := hashFile(stored)
	if err != nil {
		return "", err
	}
	img.SHA256, img.Size = sum, size
	return stored, nil
}

// spool receives an uploaded disk image into work and checks it: its
// format (qcow2, raw or ISO, told apart by content), and for a qcow2 or
// raw image that qemu-img reads it, that it is standalone (no backing or
// external data file, which would make qemu-img, as root, read a host
// file) and, for qcow2, that it is not corrupt.
func (im *Images) spool(ctx context.Context, work string, body io.Reader) (path string, n int64, format string, info imgInfo, err error) {
	src := filepath.Join(work, "upload")
	f, err := os.Create(src)
	if err != nil {
		return "", 0, "", info, err
	}
	n, err = io.Copy(&spoolWriter{w: f, im: im}, io.LimitReader(body, im.maxSize+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch {
	case consensus.ErrorCode(err) != "":
		return "", 0, "", info, err
	case errors.Is(err, syscall.ENOSPC):
		return "", 0, "", info, consensus.Errorf(storage.CodeInsufficientStorage, "receive image: %v", err)
	case err != nil:
		return "", 0, "", info, fmt.Errorf("receive image: %w", err)
	case n == 0:
		return "", 0, "", info, invalid("the image is empty")
	case n > im.maxSize:
		return "", 0, "", info, invalid("the image is larger than the %d GiB limit", im.maxSize>>30)
	}
	format, err = detectFormat(src)
	if err != nil {
		return "", 0, "", info, err
	}
	if format == FormatISO {
		return src, n, format, info, nil
	}
	info, err = im.info(ctx, src, format)
	if err != nil {
		return "", 0, "", info, err
	}
	if info.BackingFile != "" {
		return "", 0, "", info, invalid("the qcow2 image has a backing file (%s): upload a standalone image", info.BackingFile)
	}
	if f := info.FormatSpecific.Data.DataFile; f != "" {
		// Its data would be read from a file of the host (CVE-2024-4467).
		return "", 0, "", info, invalid("the qcow2 image keeps its data in an external file (%s): upload a standalone image", f)
	}
	if format == FormatQCOW2 {
		if out, err := im.run(ctx, "check", "-f", "qcow2", src); err != nil {
			return "", 0, "", info, invalid("the qcow2 image is corrupt: %s", firstLine(out, err))
		}
	}
	return src, n, format, info, nil
}

// spoolWriter writes an upload to the spool and refuses, before the
// filesystem reaches the control plane's floor, an upload whose size was not
// known in advance (chunked, or an import without Content-Length). It
// measures the room now and then rather than per write: budget is what was
// usable at the last look, less what has been written since.
type spoolWriter struct {
	w       io.Writer
	im      *Images
	budget  uint64
	written uint64 // since the last look
}

// spoolRecheck bounds the bytes written between two looks, as others
// (Raft, other uploads) use the same filesystem meanwhile.
const spoolRecheck = 64 << 20

func (s *spoolWriter) Write(p []byte) (int, error) {
	if uint64(len(p)) > s.budget || s.written >= spoolRecheck {
		sp, err := s.im.reserve.Space(s.im.tmp)
		if err != nil {
			return 0, fmt.Errorf("measure the image spool: %w", err)
		}
		s.budget, s.written = sp.Usable(), 0
		if uint64(len(p)) > s.budget {
			return 0, consensus.Errorf(storage.CodeInsufficientStorage, "this node ran out of room for the image above the %d MiB kept for the control plane; try another node", sp.Floor>>20)
		}
	}
	n, err := s.w.Write(p)
	s.budget -= uint64(n)
	s.written += uint64(n)
	return n, err
}

// detectFormat reads an image's magic numbers. qemu-img's own probing is
// not used for the decision: trusting a probe on untrusted bytes is how raw
// images get mistaken for qcow2 with a backing file (CVE-2008-2004).
func detectFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 0x8006)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return FormatQCOW2, nil
	case n >= 0x8006 && string(head[0x8001:0x8006]) == "CD001":
		return FormatISO, nil
	case bytes.HasPrefix(head, []byte("KDMV")), bytes.HasPrefix(head, []byte("vhdxfile")),
		bytes.HasPrefix(head, []byte("conectix")), bytes.Contains(head[:min(n, 128)], []byte("<<< Oracle VM VirtualBox Disk Image >>>")):
		return "", invalid("VMDK, VHD(X) and VDI images are not supported: convert to qcow2 or raw first (qemu-img convert -O qcow2)")
	}
	return FormatRaw, nil
}

type imgInfo struct {
	VirtualSize    int64  `json:"virtual-size"`
	BackingFile    string `json:"backing-filename"`
	FormatSpecific struct {
		Data struct {
			DataFile string `json:"data-file"`
		} `json:"data"`
	} `json:"format-specific"`
}

func (im *Images) info(ctx context.Context, path, format string) (imgInfo, error) {
	var info imgInfo
	out, err := im.run(ctx, "info", "--output=json", "-f", format, path)
	if err != nil {
		return info, invalid("not a valid %s image: %s", format, firstLine(out, err))
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return info, fmt.Errorf("qemu-img info: %w", err)
	}
	return info, nil
}

func (im *Images) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd, err := qemuImgCommand(ctx, im.qemuImg, args...)
	if err != nil {
		return nil, err
	}
	return cmd.CombinedOutput()
}

func firstLine(out []byte, err error) string {
	s := strings.TrimSpace(string(out))
	if i := strings.IndexByte(s, '\n'); i > 0 {
		s = s[:i]
	}
	if s == "" && err != nil {
		s = err.Error()
	}
	return strings.TrimPrefix(s, "qemu-img: ")
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// Update renames an image or changes its visibility (its project's members;
// a public image, or making one public, takes a cluster admin).
func (im *Images) Update(ctx context.Context, p *identity.Principal, ref string, name, visibility *string, ifMatch uint64) (*Image, error) {
	const action = "image.update"
	img, err := im.Get(p, ref)
	if err != nil {
		return nil, im.id.Deny(ctx, p, action, ref, "", err)
	}
	spec := ImageSpec{Name: img.Name, Visibility: img.Visibility}
	if name != nil {
		spec.Name = *name
	}
	if visibility != nil {
		spec.Visibility = *visibility
	}
	if err := spec.validate(); err != nil {
		return nil, im.id.Deny(ctx, p, action, img.Name, img.ProjectID, err)
	}
	if !CanChangeImage(p, img) || (spec.Visibility == VisibilityPublic && !mayPublish(p)) {
		return nil, im.id.Deny(ctx, p, action, img.Name, img.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to change image %s", img.Name))
	}
	var out Image
	err = im.id.Mutate(ctx, p, action, img.Name, img.ProjectID, MsgUpdateImage, updateImageCmd{ID: img.ID, Name: name, Visibility: visibility, IfMatch: ifMatch}, &out)
	return &out, err
}

// Delete removes an image and its bytes. VMs made from it keep running: each
// node keeps its cached copy while a local VM's disk is based on it.
func (im *Images) Delete(ctx context.Context, p *identity.Principal, ref string, ifMatch uint64) error {
	const action = "image.delete"
	img, err := im.Get(p, ref)
	if err != nil {
		return im.id.Deny(ctx, p, action, ref, "", err)
	}
	if !CanChangeImage(p, img) {
		return im.id.Deny(ctx, p, action, img.Name, img.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to delete image %s", img.Name))
	}
	if err := im.id.Mutate(ctx, p, action, img.Name, img.ProjectID, MsgDeleteImage, deleteImageCmd{ID: img.ID, IfMatch: ifMatch}, nil); err != nil {
		return err
	}
	if err := im.objects.DeleteSystem(context.WithoutCancel(ctx), ImageBucket, img.ID); err != nil {
		// The record is gone; the orphan sweeper cannot see these shards
		// (the object still exists), so say so loudly.
		im.log.Error("image deleted but its bytes were not", "image", img.ID, "err", err)
	}
	return nil
}
