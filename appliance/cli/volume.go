package cli

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/cairnhq/cairn/storage/volume"
)

// volumeCommands are the volume noun; merged into commands.
var volumeCommands = map[string]command{
	"volume list": {usage: "[--project PROJECT]", help: "block volumes you can see", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		project := fs.String("project", "", "only this project's volumes")
		return func(e *env, args []string) error {
			path := "/api/v1/volumes"
			if *project != "" {
				path += "?project=" + url.QueryEscape(*project)
			}
			var vs []volume.Volume
			if err := get(e, path, &vs); err != nil {
				return err
			}
			return e.print(vs, []string{"NAME", "SIZE GIB", "STATE", "ATTACHED TO", "REPLICAS", "ID"}, func(i int) []string {
				v := vs[i]
				return []string{v.Name, itoa(v.SizeGiB()), v.State, attachedTo(&v), replicaSummary(&v), v.ID}
			}, len(vs))
		}
	}},
	"volume create": {usage: "NAME --size GIB [--image I | --snapshot S | --source VOL] [--project P]", help: "create a block volume, replicated across nodes", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		var req volume.Create
		fs.Int64Var(&req.SizeGiB, "size", 0, "size in GiB (default with --snapshot or --source: theirs)")
		fs.StringVar(&req.Image, "image", "", "image name or ID: the volume starts as a copy of it")
		fs.StringVar(&req.Snapshot, "snapshot", "", "snapshot name or ID: the volume starts as it (copy-on-write, nothing copied up front)")
		fs.StringVar(&req.Source, "source", "", "volume name or ID: a clone of it as it is now (copy-on-write)")
		fs.StringVar(&req.Project, "project", "", "project (default: your only project)")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "a volume name"); err != nil {
				return err
			}
			if req.SizeGiB < 1 && req.Snapshot == "" && req.Source == "" {
				return usageError("--size GIB is required")
			}
			req.Name = args[0]
			var v volume.Volume
			if err := send(e, "POST", "/api/v1/volumes", req, &v); err != nil {
				return err
			}
			return printVolume(e, &v)
		}
	}},
	"volume upload": {usage: "VOLUME FILE", help: "write a qcow2 or raw disk image into a detached block volume, replacing its contents", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 2, "a volume and an image file"); err != nil {
			return err
		}
		var v volume.Volume
		if err := uploadFile(e, args[1], "/api/v1/volumes/"+url.PathEscape(args[0])+"/upload", &v); err != nil {
			return err
		}
		return printVolume(e, &v)
	})},
	"volume download": {usage: "VOLUME FILE [--format qcow2|raw]", help: "copy a detached block volume into a local image file", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		format := fs.String("format", "qcow2", "qcow2 (sparse) or raw")
		return func(e *env, args []string) error {
			if err := needArgs(args, 2, "a volume and a file to write"); err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			tmp := args[1] + ".part"
			// A disk image may hold patient data: the user's alone.
			f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			err = c.download("/api/v1/volumes/"+url.PathEscape(args[0])+"/download?format="+url.QueryEscape(*format), f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(tmp, args[1])
			}
			if err != nil {
				_ = os.Remove(tmp)
				return err
			}
			fmt.Fprintf(e.stdout, "%s written\n", args[1])
			return nil
		}
	}},
	"volume export": {usage: "SNAPSHOT|VOLUME --dir DIR | --stop SNAPSHOT|VOLUME", help: "serve a snapshot or a detached block volume read-only to backup tools (nbdcopy, qemu-img) over NBD with TLS; writes their certificates into DIR", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		dir := fs.String("dir", "", "directory for ca-cert.pem, client-cert.pem and client-key.pem (libnbd's and QEMU's tls-certificates layout)")
		stop := fs.Bool("stop", false, "end the export")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "a volume"); err != nil {
				return err
			}
			// A snapshot of that name, else a volume (the names of a
			// project's volumes and snapshots are distinct).
			path := "/api/v1/snapshots/" + url.PathEscape(args[0]) + "/export"
			var ae *apiError
			if err := send(e, "GET", "/api/v1/snapshots/"+url.PathEscape(args[0]), nil, nil); errors.As(err, &ae) && ae.Status == http.StatusNotFound {
				path = "/api/v1/volumes/" + url.PathEscape(args[0]) + "/export"
			} else if err != nil {
				return err
			}
			if *stop {
				var v volume.Volume
				if err := send(e, "DELETE", path, nil, &v); err != nil {
					return err
				}
				return printVolume(e, &v)
			}
			if *dir == "" {
				return usageError("--dir DIR is required: the client certificate is written there")
			}
			var g volume.ExportGrant
			if err := send(e, "POST", path, nil, &g); err != nil {
				return err
			}
			if err := os.MkdirAll(*dir, 0o700); err != nil {
				return err
			}
			for name, data := range map[string]string{"ca-cert.pem": g.CACert, "client-cert.pem": g.Cert, "client-key.pem": g.Key} {
				p := filepath.Join(*dir, name)
				_ = os.Remove(p) // a file left there keeps its mode otherwise
				if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
					return err
				}
			}
			abs, _ := filepath.Abs(*dir)
			uri := g.URI + "?tls-certificates=" + abs
			return e.printKV(map[string]any{"uri": uri, "expires": g.Expires, "volume": g.Volume}, [][2]string{
				{"uri", uri}, {"expires", g.Expires.Format("2006-01-02 15:04 MST")},
				{"copy with", "nbdcopy '" + uri + "' backup.raw"},
				{"stop with", "cairn volume export --stop " + args[0]}})
		}
	}},
	"volume show": {usage: "VOLUME", help: "a block volume's size, state, replicas and attachment", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one volume"); err != nil {
			return err
		}
		var v volume.Volume
		if err := get(e, "/api/v1/volumes/"+url.PathEscape(args[0]), &v); err != nil {
			return err
		}
		return printVolume(e, &v)
	})},
	"volume delete": {usage: "VOLUME", help: "delete a detached block volume and its replicas", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one volume"); err != nil {
			return err
		}
		var v volume.Volume
		if err := send(e, "DELETE", "/api/v1/volumes/"+url.PathEscape(args[0]), nil, &v); err != nil {
			return err
		}
		return printVolume(e, &v)
	})},
	"volume extend": {usage: "VOLUME --size GIB", help: "grow a block volume", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		size := fs.Int64("size", 0, "new size in GiB")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one volume"); err != nil {
				return err
			}
			if *size < 1 {
				return usageError("--size GIB is required")
			}
			var v volume.Volume
			if err := send(e, "POST", "/api/v1/volumes/"+url.PathEscape(args[0])+"/extend", map[string]int64{"size_gib": *size}, &v); err != nil {
				return err
			}
			return printVolume(e, &v)
		}
	}},
	"volume attach": {usage: "VOLUME --vm VM | --node NODE", help: "attach a block volume to a VM, or to a node's host (cluster admins)", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		var to volume.AttachTo
		fs.StringVar(&to.VM, "vm", "", "the VM to attach to")
		fs.StringVar(&to.Node, "node", "", "the node whose host gets the volume (cluster admins)")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one volume"); err != nil {
				return err
			}
			if (to.VM == "") == (to.Node == "") {
				return usageError("say --vm VM or --node NODE")
			}
			var v volume.Volume
			if err := send(e, "POST", "/api/v1/volumes/"+url.PathEscape(args[0])+"/attach", to, &v); err != nil {
				return err
			}
			return printVolume(e, &v)
		}
	}},
	"volume detach": {usage: "VOLUME", help: "detach a block volume", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one volume"); err != nil {
			return err
		}
		var v volume.Volume
		if err := send(e, "POST", "/api/v1/volumes/"+url.PathEscape(args[0])+"/detach", nil, &v); err != nil {
			return err
		}
		return printVolume(e, &v)
	})},
	"volume snapshot create": {usage: "VOLUME SNAPSHOT", help: "snapshot a block volume (quiesced through qemu-guest-agent when its VM runs one)", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 2, "a volume and a snapshot name"); err != nil {
			return err
		}
		var v volume.Volume
		if err := send(e, "POST", "/api/v1/volumes/"+url.PathEscape(args[0])+"/snapshots", map[string]string{"name": args[1]}, &v); err != nil {
			return err
		}
		return printSnapshot(e, &v)
	})},
	"volume snapshot list": {usage: "[--volume VOLUME] [--project PROJECT]", help: "volume snapshots you can see", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		project := fs.String("project", "", "only this project's snapshots")
		of := fs.String("volume", "", "only this volume's snapshots")
		return func(e *env, args []string) error {
			q := url.Values{}
			if *project != "" {
				q.Set("project", *project)
			}
			if *of != "" {
				q.Set("volume", *of)
			}
			var vs []volume.Volume
			if err := get(e, "/api/v1/snapshots?"+q.Encode(), &vs); err != nil {
				return err
			}
			return e.print(vs, []string{"NAME", "SIZE GIB", "STATE", "OF", "QUIESCED", "CREATED", "ID"}, func(i int) []string {
				v := vs[i]
				return []string{v.Name, itoa(v.SizeGiB()), v.State, v.Of, fmt.Sprint(v.Quiesced), v.CreatedAt.Format("2006-01-02 15:04"), v.ID}
			}, len(vs))
		}
	}},
	"volume snapshot show": {usage: "SNAPSHOT", help: "a volume snapshot", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one snapshot"); err != nil {
			return err
		}
		var v volume.Volume
		if err := get(e, "/api/v1/snapshots/"+url.PathEscape(args[0]), &v); err != nil {
			return err
		}
		return printSnapshot(e, &v)
	})},
	"volume snapshot delete": {usage: "SNAPSHOT", help: "delete a volume snapshot (volumes made from it keep their data)", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one snapshot"); err != nil {
			return err
		}
		var v volume.Volume
		if err := send(e, "DELETE", "/api/v1/snapshots/"+url.PathEscape(args[0]), nil, &v); err != nil {
			return err
		}
		return printSnapshot(e, &v)
	})},
}

func printSnapshot(e *env, v *volume.Volume) error {
	return e.printKV(v, [][2]string{{"id", v.ID}, {"name", v.Name}, {"project", v.ProjectID}, {"size", fmt.Sprintf("%d GiB", v.SizeGiB())},
		{"state", v.State}, {"of volume", v.Of}, {"quiesced", fmt.Sprint(v.Quiesced)}, {"replicas", replicaSummary(v)}})
}

func init() {
	for k, v := range volumeCommands {
		commands[k] = v
	}
}

func attachedTo(v *volume.Volume) string {
	switch a := v.Attachment; {
	case a == nil:
		return ""
	case a.VM != "" && a.Boot:
		return "vm " + a.VM + " (boot disk)"
	case a.VM != "" && a.Firmware:
		return "vm " + a.VM + " (UEFI settings)"
	case a.VM != "":
		return "vm " + a.VM
	}
	return "node " + v.Attachment.Node
}

// replicaSummary is "NODE:STATE" per replica.
func replicaSummary(v *volume.Volume) string {
	var s []string
	for _, r := range v.Replicas {
		s = append(s, r.Node+":"+r.State)
	}
	return strings.Join(s, ",")
}

func printVolume(e *env, v *volume.Volume) error {
	return e.printKV(v, [][2]string{{"id", v.ID}, {"name", v.Name}, {"project", v.ProjectID}, {"size", fmt.Sprintf("%d GiB", v.SizeGiB())},
		{"state", v.State}, {"attached to", attachedTo(v)}, {"replicas", replicaSummary(v)}, {"writer", v.Writer}, {"epoch", fmt.Sprint(v.Epoch)}, {"source", sourceOf(v)},
		{"layered on", v.Parent}})
}

// sourceOf says what a volume was made from.
func sourceOf(v *volume.Volume) string {
	switch {
	case v.Source == nil && v.Parent != "":
		return "a snapshot (copy-on-write)"
	case v.Source == nil:
		return "blank"
	case !v.Source.Filled:
		return v.Source.String() + " (copied in when first attached)"
	}
	return v.Source.String()
}
