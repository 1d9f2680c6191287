package hypervisor

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/volume"
)

// Uploads into and downloads of block volumes run through the node that
// takes the request: the volume (detached) is attached to this node for the
// transfer, served here over NBD, and qemu-img converts between the image
// and the volume; the volume is detached again however it ends.

// SetBlock gives the service this node's volume server, for transfers.
func (s *Service) SetBlock(b BlockVolumes) { s.block = b }

// servedHere waits for this node to serve a volume attached to it.
func (s *Service) servedHere(ctx context.Context, v *volume.Volume) (string, error) {
	if s.block == nil {
		return "", consensus.Errorf(consensus.CodeUnavailable, "this node serves no volumes")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		if sock, _, ok := s.block.Served(v.ID); ok {
			return "nbd+unix:///" + v.ID + "?socket=" + sock, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("volume %s was not opened on this node: %w", v.Name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// UploadVolume writes a qcow2 or raw disk image (body) into a detached
// volume, replacing what it held. The image is checked as an image upload
// is (standalone, not corrupt) and must fit the volume.
func (s *Service) UploadVolume(ctx context.Context, p *identity.Principal, ref string, body io.Reader) (*volume.Volume, error) {
	if s.vols == nil {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "volumes are not available on this node")
	}
	v, release, err := s.vols.Borrow(ctx, p, ref, "volume.upload")
	if err != nil {
		return nil, err
	}
	defer release()
	im := s.images
	if err := os.MkdirAll(im.tmp, 0o700); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(im.tmp, "volume-upload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	src, _, format, info, err := im.spool(ctx, work, body)
	switch {
	case err != nil:
		return nil, err
	case format == FormatISO:
		return nil, invalid("an installer ISO is not a disk: upload it as an image and boot a VM from it")
	case info.VirtualSize > v.SizeBytes:
		return nil, invalid("the image is %d bytes, larger than volume %s's %d GiB: extend the volume first", info.VirtualSize, v.Name, v.SizeGiB())
	}
	target, err := s.servedHere(ctx, v)
	if err != nil {
		return nil, err
	}
	// Received whole: the write goes on if the client leaves, so the volume
	// is not left half old, half new for want of a connection.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 6*time.Hour)
	defer cancel()
	if out, err := im.run(wctx, "convert", "-n", "-f", format, "-O", FormatRaw, src, target); err != nil {
		return nil, fmt.Errorf("write the image into volume %s: %s", v.Name, firstLine(out, err))
	}
	// What lies past the image's end is zeroed: the volume holds the image
	// and nothing of what it held before (a stale partition table copy at
	// the end of a disk would confuse a guest).
	if err := s.zeroTail(wctx, v, info.VirtualSize); err != nil {
		return nil, fmt.Errorf("zero volume %s past the image: %w", v.Name, err)
	}
	return v, nil
}

// zeroTail zeroes a volume from off to its end.
func (s *Service) zeroTail(ctx context.Context, v *volume.Volume, off int64) error {
	b, ok := s.block.Backend(v.ID)
	if !ok {
		return fmt.Errorf("volume %s is not served here", v.Name)
	}
	end := b.Size()
	if off >= end {
		return nil
	}
	if r := off % volume.BlockSize; r != 0 { // the block the image ends in
		blk := make([]byte, volume.BlockSize)
		start := off - r
		if err := b.ReadAt(ctx, blk, start); err != nil {
			return err
		}
		clear(blk[r:])
		if err := b.WriteAt(ctx, blk, start, false); err != nil {
			return err
		}
		off = start + volume.BlockSize
	}
	if off < end {
		if err := b.WriteZeroes(ctx, off, end-off, false); err != nil {
			return err
		}
	}
	return b.Flush(ctx)
}

// DownloadVolume copies a detached volume out as a qcow2 (sparse, the
// default) or raw image: converted into a spool file on this node, then
// written to w once it is complete (size tells the length first).
func (s *Service) DownloadVolume(ctx context.Context, p *identity.Principal, ref, format string, size func(int64), w io.Writer) error {
	if s.vols == nil {
		return consensus.Errorf(consensus.CodeUnavailable, "volumes are not available on this node")
	}
	switch format {
	case "":
		format = FormatQCOW2
	case FormatQCOW2, FormatRaw:
	default:
		return invalid("a volume downloads as qcow2 or raw, not %q", format)
	}
	v, release, err := s.vols.Borrow(ctx, p, ref, "volume.download")
	if err != nil {
		return err
	}
	defer release()
	im := s.images
	if err := os.MkdirAll(im.tmp, 0o700); err != nil {
		return err
	}
	work, err := os.MkdirTemp(im.tmp, "volume-download-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	src, err := s.servedHere(ctx, v)
	if err != nil {
		return err
	}
	if format == FormatRaw {
		// Streamed from the volume itself: nothing is spooled.
		b, ok := s.block.Backend(v.ID)
		if !ok {
			return fmt.Errorf("volume %s is not served here", v.Name)
		}
		size(b.Size())
		buf := make([]byte, 4<<20)
		for off := int64(0); off < b.Size(); off += int64(len(buf)) {
			p := buf[:min(int64(len(buf)), b.Size()-off)]
			if err := b.ReadAt(ctx, p, off); err != nil {
				return err
			}
			if _, err := w.Write(p); err != nil {
				return err
			}
		}
		return nil
	}
	// qcow2 needs a file to be built in: at most as large as the volume.
	if err := im.spoolRoom(uint64(v.SizeBytes)); err != nil {
		return err
	}
	out := work + "/volume." + format
	if b, err := im.run(ctx, "convert", "-f", FormatRaw, "-O", format, src, out); err != nil {
		return fmt.Errorf("read volume %s: %s", v.Name, firstLine(b, err))
	}
	release() // the copy is made: a slow reader does not hold the volume
	f, err := os.Open(out)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size(st.Size())
	_, err = io.Copy(w, f)
	return err
}
