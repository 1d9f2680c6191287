package cli

import (
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

type clusterStatus struct {
	consensus.Status
	JoinToken string `json:"join_token,omitempty"`
}

// noFlags is for commands with only the global flags.
func noFlags(run func(e *env, args []string) error) func(*flag.FlagSet) func(*env, []string) error {
	return func(*flag.FlagSet) func(*env, []string) error { return run }
}

// commands maps "noun verb" to its implementation.
var commands = map[string]command{
	"login": {usage: "--username USER --password-stdin", help: "log in, print and save a token", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		user := fs.String("username", "", "user name")
		stdin := fs.Bool("password-stdin", false, "read the password from standard input")
		return func(e *env, args []string) error {
			if *user == "" || !*stdin || len(args) != 0 {
				return usageError("--username and --password-stdin are required")
			}
			pw, err := e.readSecret()
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			var res struct {
				Token     string    `json:"token"`
				ExpiresAt time.Time `json:"expires_at"`
			}
			if err := c.do("POST", "/api/v1/auth/login", map[string]string{"username": *user, "password": pw}, &res); err != nil {
				return err
			}
			s := e.settings
			s.Token = res.Token
			if err := s.save(); err != nil {
				return fmt.Errorf("save config: %w", err)
			}
			if e.output == "json" {
				return e.printKV(res, nil)
			}
			fmt.Fprintln(e.stdout, res.Token)
			return nil
		}
	}},
	"logout": {help: "revoke the saved token", flags: noFlags(func(e *env, args []string) error {
		c, err := e.client()
		if err != nil {
			return err
		}
		return c.do("POST", "/api/v1/auth/logout", nil, nil)
	})},
	"setup": {usage: "--setup-code CODE --username USER --password-stdin", help: "create the first cluster admin", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		code := fs.String("setup-code", "", "one-time setup code shown on the node's console")
		user := fs.String("username", "admin", "admin user name")
		stdin := fs.Bool("password-stdin", false, "read the password from standard input")
		return func(e *env, args []string) error {
			if *code == "" || !*stdin {
				return usageError("--setup-code and --password-stdin are required")
			}
			pw, err := e.readSecret()
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			var u identity.User
			if err := c.do("POST", "/api/v1/setup", map[string]string{"setup_code": *code, "username": *user, "password": pw}, &u); err != nil {
				return err
			}
			return e.printKV(u, [][2]string{{"created admin", u.Name}})
		}
	}},

	"cluster status": {help: "leader, nodes, roles and health", flags: noFlags(func(e *env, args []string) error {
		c, err := e.client()
		if err != nil {
			return err
		}
		var st clusterStatus
		if err := c.do("GET", "/api/v1/cluster", nil, &st); err != nil {
			return err
		}
		if e.output == "json" {
			return e.printKV(st, nil)
		}
		fmt.Fprintf(e.stdout, "leader: %s   term: %d   voters: %d   commit index: %d\n", st.Leader, st.Term, st.Voters, st.CommitIndex)
		if st.JoinToken != "" {
			fmt.Fprintf(e.stdout, "join token: %s\n", st.JoinToken)
		}
		fmt.Fprintln(e.stdout)
		return printNodes(e, st.Nodes)
	})},
	"node enrol-token create": {usage: "[--ttl 1h]", help: "a one-time enrolment token that admits one new node (cluster admin)", flags: enrolTokenCreate},
	"node pending":            {help: "nodes waiting for approval to join (cluster admin)", flags: noFlags(nodePending)},
	"node approve":            {usage: "NAME --fingerprint FP", help: "admit a pending node (cluster admin)", flags: nodeApprove},
	"node reject":             {usage: "NAME [--fingerprint FP]", help: "forget a pending node, or only its key FP (cluster admin)", flags: nodeReject},
	"node list": {help: "nodes of the cluster", flags: noFlags(func(e *env, args []string) error {
		c, err := e.client()
		if err != nil {
			return err
		}
		var nodes []consensus.NodeStatus
		if err := c.do("GET", "/api/v1/nodes", nil, &nodes); err != nil {
			return err
		}
		return printNodes(e, nodes)
	})},

	"project list": {help: "projects you can see", flags: noFlags(func(e *env, args []string) error {
		var ps []identity.Project
		if err := get(e, "/api/v1/projects", &ps); err != nil {
			return err
		}
		return e.print(ps, []string{"ID", "NAME", "DESCRIPTION"}, func(i int) []string {
			return []string{ps[i].ID, ps[i].Name, ps[i].Description}
		}, len(ps))
	})},
	"project create": {usage: "NAME [--description TEXT]", help: "create a project", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		desc := fs.String("description", "", "description")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one project name"); err != nil {
				return err
			}
			var p identity.Project
			if err := send(e, "POST", "/api/v1/projects", identity.ProjectSpec{Name: args[0], Description: *desc}, &p); err != nil {
				return err
			}
			return printProject(e, p)
		}
	}},
	"project show": {usage: "PROJECT", help: "show a project", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one project"); err != nil {
			return err
		}
		var p identity.Project
		if err := get(e, "/api/v1/projects/"+url.PathEscape(args[0]), &p); err != nil {
			return err
		}
		return printProject(e, p)
	})},
	"project update": {usage: "PROJECT --description TEXT", help: "change a project", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		desc := fs.String("description", "", "new description")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one project"); err != nil {
				return err
			}
			var p identity.Project
			if err := send(e, "PATCH", "/api/v1/projects/"+url.PathEscape(args[0]), map[string]string{"description": *desc}, &p); err != nil {
				return err
			}
			return printProject(e, p)
		}
	}},
	"project delete": {usage: "PROJECT", help: "delete an empty project", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one project"); err != nil {
			return err
		}
		return send(e, "DELETE", "/api/v1/projects/"+url.PathEscape(args[0]), nil, nil)
	})},
	"project members": {usage: "PROJECT", help: "list a project's members", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one project"); err != nil {
			return err
		}
		var ms []identity.MemberView
		if err := get(e, "/api/v1/projects/"+url.PathEscape(args[0])+"/members", &ms); err != nil {
			return err
		}
		return e.print(ms, []string{"USER", "ROLE"}, func(i int) []string { return []string{ms[i].UserName, string(ms[i].Role)} }, len(ms))
	})},
	"project add-member": {usage: "PROJECT USER admin|member|reader", help: "give a user a role in a project", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 3, "project, user and role"); err != nil {
			return err
		}
		return send(e, "PUT", "/api/v1/projects/"+url.PathEscape(args[0])+"/members/"+url.PathEscape(args[1]), map[string]string{"role": args[2]}, nil)
	})},
	"project remove-member": {usage: "PROJECT USER", help: "remove a user from a project", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 2, "project and user"); err != nil {
			return err
		}
		return send(e, "DELETE", "/api/v1/projects/"+url.PathEscape(args[0])+"/members/"+url.PathEscape(args[1]), nil, nil)
	})},

	"user list": {help: "list users", flags: noFlags(func(e *env, args []string) error {
		var us []identity.User
		if err := get(e, "/api/v1/users", &us); err != nil {
			return err
		}
		return e.print(us, []string{"ID", "NAME", "CLUSTER ADMIN", "DISABLED", "DISPLAY NAME"}, func(i int) []string {
			return []string{us[i].ID, us[i].Name, strconv.FormatBool(us[i].ClusterAdmin), strconv.FormatBool(us[i].Disabled), us[i].DisplayName}
		}, len(us))
	})},
	"user disable": {usage: "USER", help: "stop a user signing in: their sessions and API tokens are revoked, their S3 keys refused until enabled", flags: noFlags(func(e *env, args []string) error {
		return setDisabled(e, args, true)
	})},
	"user enable": {usage: "USER", help: "let a disabled user sign in again", flags: noFlags(func(e *env, args []string) error {
		return setDisabled(e, args, false)
	})},
	"user create": {usage: "NAME --password-stdin [--cluster-admin] [--display-name TEXT]", help: "create a user", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		stdin := fs.Bool("password-stdin", false, "read the password from standard input")
		admin := fs.Bool("cluster-admin", false, "make the user a cluster admin")
		display := fs.String("display-name", "", "display name")
		return func(e *env, args []string) error {
			pw, err := e.argAndSecret(args, *stdin, "one user name")
			if err != nil {
				return err
			}
			var u identity.User
			if err := send(e, "POST", "/api/v1/users", identity.UserSpec{Name: args[0], Password: pw, ClusterAdmin: *admin, DisplayName: *display}, &u); err != nil {
				return err
			}
			return e.printKV(u, [][2]string{{"id", u.ID}, {"name", u.Name}, {"cluster admin", strconv.FormatBool(u.ClusterAdmin)}})
		}
	}},
	"user delete": {usage: "USER", help: "delete a user", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one user"); err != nil {
			return err
		}
		return send(e, "DELETE", "/api/v1/users/"+url.PathEscape(args[0]), nil, nil)
	})},
	"user passwd": {usage: "USER --password-stdin [--current-password-stdin]", help: "change a user's password; the user's other sessions and API tokens are revoked", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		stdin := fs.Bool("password-stdin", false, "read the new password from standard input")
		current := fs.Bool("current-password-stdin", false, "read your current password, then the new one, from standard input, one per line: needed to change your own password")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one user"); err != nil {
				return err
			}
			if !*stdin {
				return usageError("--password-stdin is required")
			}
			n := 1
			if *current {
				n = 2
			}
			pws, err := e.readSecrets(n)
			if err != nil {
				return err
			}
			body := map[string]string{"password": pws[n-1]}
			if *current {
				body["current_password"] = pws[0]
			}
			return send(e, "PATCH", "/api/v1/users/"+url.PathEscape(args[0]), body, nil)
		}
	}},

	"token list": {help: "your API and session tokens (everyone's for cluster admins)", flags: noFlags(func(e *env, args []string) error {
		var ts []identity.Token
		if err := get(e, "/api/v1/tokens", &ts); err != nil {
			return err
		}
		return e.print(ts, []string{"ID", "USER", "KIND", "NAME", "CREATED", "EXPIRES"}, func(i int) []string {
			exp := "never"
			if !ts[i].ExpiresAt.IsZero() {
				exp = ts[i].ExpiresAt.Format(time.RFC3339)
			}
			return []string{ts[i].ID, ts[i].UserID, ts[i].Kind, ts[i].Name, ts[i].CreatedAt.Format(time.RFC3339), exp}
		}, len(ts))
	})},
	"token create": tokenCreate("/api/v1/tokens", "create an API token (the secret is shown once)",
		"lifetime; 0 means the cluster's maximum (90 days unless an admin changed it)"),
	"token revoke": {usage: "ID", help: "revoke a token", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one token ID"); err != nil {
			return err
		}
		return send(e, "DELETE", "/api/v1/tokens/"+url.PathEscape(args[0]), nil, nil)
	})},

	"flavor list": {help: "VM flavors", flags: noFlags(func(e *env, args []string) error {
		var fl []identity.Flavor
		if err := get(e, "/api/v1/flavors", &fl); err != nil {
			return err
		}
		return e.print(fl, []string{"NAME", "VCPUS", "RAM MIB", "DISK GIB", "ID"}, func(i int) []string {
			f := fl[i]
			return []string{f.Name, itoa(f.VCPUs), itoa(f.RAMMiB), itoa(f.DiskGiB), f.ID}
		}, len(fl))
	})},
	"flavor create": {usage: "NAME --vcpus N --ram-mib N --disk-gib N [--local-disk]", help: "create a flavor", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		var spec identity.FlavorSpec
		fs.Int64Var(&spec.VCPUs, "vcpus", 1, "virtual CPUs")
		fs.Int64Var(&spec.RAMMiB, "ram-mib", 1024, "memory in MiB")
		fs.Int64Var(&spec.DiskGiB, "disk-gib", 10, "root disk in GiB")
		fs.BoolVar(&spec.LocalDisk, "local-disk", false, "VMs of this size keep their boot disk on their node (scratch, lost with it)")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one flavor name"); err != nil {
				return err
			}
			spec.Name = args[0]
			var f identity.Flavor
			if err := send(e, "POST", "/api/v1/flavors", spec, &f); err != nil {
				return err
			}
			return e.printKV(f, [][2]string{{"id", f.ID}, {"name", f.Name}, {"vcpus", itoa(f.VCPUs)}, {"ram_mib", itoa(f.RAMMiB)}, {"disk_gib", itoa(f.DiskGiB)}})
		}
	}},
	"flavor delete": {usage: "FLAVOR", help: "delete a flavor", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one flavor"); err != nil {
			return err
		}
		return send(e, "DELETE", "/api/v1/flavors/"+url.PathEscape(args[0]), nil, nil)
	})},

	"quota show": {usage: "PROJECT", help: "a project's limits and usage", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one project"); err != nil {
			return err
		}
		var q identity.Quota
		if err := get(e, "/api/v1/projects/"+url.PathEscape(args[0])+"/quota", &q); err != nil {
			return err
		}
		return printQuota(e, q)
	})},
	"quota set": {usage: "PROJECT [--instances N] [--vcpus N] [--ram-mib N] [--disk-gib N] [--object-gib N] [--floating-ips N] [--objects N] [--volumes N] [--volume-gib N] [--snapshots N] [--networks N] [--ports N] [--routers N]", help: "change a project's limits (-1 = unlimited)", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		vals := map[string]*int64{}
		for _, n := range []string{"instances", "vcpus", "ram-mib", "disk-gib", "object-gib", "floating-ips", "objects", "volumes", "volume-gib", "snapshots", "networks", "ports", "routers"} {
			vals[n] = fs.Int64(n, -2, "limit for "+n+"; -1 is unlimited")
		}
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one project"); err != nil {
				return err
			}
			path := "/api/v1/projects/" + url.PathEscape(args[0]) + "/quota"
			var q identity.Quota
			if err := get(e, path, &q); err != nil {
				return err
			}
			l := &q.Limits
			for name, dst := range map[string]*int64{"instances": &l.Instances, "vcpus": &l.VCPUs, "ram-mib": &l.RAMMiB,
				"disk-gib": &l.DiskGiB, "object-gib": &l.ObjectGiB, "floating-ips": &l.FloatingIPs, "objects": &l.Objects,
				"volumes": &l.Volumes, "volume-gib": &l.VolumeGiB, "snapshots": &l.Snapshots, "networks": &l.Networks, "ports": &l.Ports, "routers": &l.Routers} {
				if v := *vals[name]; v != -2 {
					*dst = v
				}
			}
			var out identity.Quota
			c, err := e.client()
			if err != nil {
				return err
			}
			// If-Match: a concurrent change by someone else is not overwritten.
			if err := c.do("PUT", path, q.Limits, &out, "If-Match", `"`+strconv.FormatUint(q.Version, 10)+`"`); err != nil {
				return err
			}
			return printQuota(e, out)
		}
	}},

	"s3 credentials create": {usage: "[--project PROJECT]", help: "create an S3 access key and secret for you in a project", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		project := fs.String("project", "", "project (default: your only project)")
		return func(e *env, args []string) error {
			if len(args) != 0 {
				return usageError("no arguments")
			}
			if *project == "" {
				var me struct {
					Roles map[string]string `json:"roles"`
				}
				if err := get(e, "/api/v1/auth/whoami", &me); err != nil {
					return err
				}
				if len(me.Roles) != 1 {
					return fmt.Errorf("you are in %d projects; pass --project", len(me.Roles))
				}
				for id := range me.Roles {
					*project = id
				}
			}
			var c identity.S3Credential
			if err := send(e, "POST", "/api/v1/s3/credentials", map[string]string{"project": *project}, &c); err != nil {
				return err
			}
			return e.printKV(c, [][2]string{{"access key", c.ID}, {"secret key", c.Secret}, {"project", c.ProjectID}})
		}
	}},
	"s3 credentials list": {help: "your S3 access keys", flags: noFlags(func(e *env, args []string) error {
		var cs []identity.S3Credential
		if err := get(e, "/api/v1/s3/credentials", &cs); err != nil {
			return err
		}
		return e.print(cs, []string{"ACCESS KEY", "PROJECT", "CREATED"}, func(i int) []string {
			return []string{cs[i].ID, cs[i].ProjectID, cs[i].CreatedAt.Format(time.RFC3339)}
		}, len(cs))
	})},
	"s3 credentials delete": {usage: "ACCESS_KEY", help: "revoke an S3 access key", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one access key"); err != nil {
			return err
		}
		return send(e, "DELETE", "/api/v1/s3/credentials/"+url.PathEscape(args[0]), nil, nil)
	})},
	"storage status": {help: "objects below full redundancy, scrub, heal and garbage-collection progress", flags: noFlags(func(e *env, args []string) error {
		var h struct {
			Node             string `json:"node"`
			DefaultLayout    string `json:"default_layout"`
			DegradedSegments int64  `json:"degraded_segments"`
			Scrub            storage.RepairStats
			Heal             storage.RepairStats
			GC               storage.GCStats `json:"gc"`
			MultipartExpiry  storage.GCStats `json:"multipart_expiry"`
		}
		if err := get(e, "/api/v1/storage", &h); err != nil {
			return err
		}
		return e.printKV(h, [][2]string{
			{"default layout", h.DefaultLayout},
			{"degraded segments", strconv.FormatInt(h.DegradedSegments, 10)},
			{"last scrub on " + h.Node, h.Scrub.LastPass.Format(time.RFC3339) + fmt.Sprintf(" (%d shards checked, %d bad)", h.Scrub.Checked, h.Scrub.Repaired)},
			{"last heal", h.Heal.LastPass.Format(time.RFC3339) + fmt.Sprintf(" (%d shards rebuilt)", h.Heal.Repaired)},
			{"last orphan sweep on " + h.Node, h.GC.LastPass.Format(time.RFC3339) + fmt.Sprintf(" (%d shard files checked, %d orphans removed, %d bytes freed)", h.GC.Checked, h.GC.Removed, h.GC.FreedBytes)},
			{"last multipart expiry", h.MultipartExpiry.LastPass.Format(time.RFC3339) + fmt.Sprintf(" (%d uploads checked, %d aborted)", h.MultipartExpiry.Checked, h.MultipartExpiry.Removed)},
		})
	})},
	"bucket list": {help: "buckets you can see", flags: noFlags(func(e *env, args []string) error {
		var bs []storage.Bucket
		if err := get(e, "/api/v1/buckets", &bs); err != nil {
			return err
		}
		return e.print(bs, []string{"NAME", "PROJECT", "OBJECTS", "BYTES", "LAYOUT"}, func(i int) []string {
			l := "default"
			if bs[i].Layout != nil {
				l = bs[i].Layout.String()
			}
			return []string{bs[i].ID, bs[i].ProjectID, itoa(bs[i].Objects), itoa(bs[i].Bytes), l}
		}, len(bs))
	})},
	"bucket layout": {usage: "BUCKET DATA PARITY", help: "choose a bucket's k+m for new objects (0 0: the default)", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 3, "a bucket, data shards and parity shards"); err != nil {
			return err
		}
		k, err1 := strconv.Atoi(args[1])
		m, err2 := strconv.Atoi(args[2])
		if err1 != nil || err2 != nil {
			return usageError("data and parity must be integers")
		}
		var b storage.Bucket
		if err := send(e, "PUT", "/api/v1/buckets/"+url.PathEscape(args[0])+"/layout", map[string]int{"data": k, "parity": m}, &b); err != nil {
			return err
		}
		return e.printKV(b, [][2]string{{"bucket", b.ID}, {"layout", fmt.Sprint(b.Layout)}})
	})},
	"storage inline": {usage: "[--budget-mib N]", help: "bytes of small objects kept inline in the replicated state, and the budget for them; --budget-mib sets it (cluster admin)", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		budget := fs.Int64("budget-mib", 0, "set the budget to this many MiB (1 to 4096)")
		return func(e *env, args []string) error {
			var u storage.InlineUsage
			var err error
			if *budget != 0 {
				err = send(e, "PUT", "/api/v1/storage/inline", map[string]int64{"inline_budget": *budget << 20}, &u)
			} else {
				err = get(e, "/api/v1/storage/inline", &u)
			}
			if err != nil {
				return err
			}
			return e.printKV(u, [][2]string{{"inline", fmt.Sprintf("%.1f MiB", float64(u.Bytes)/(1<<20))}, {"budget", fmt.Sprintf("%.1f MiB", float64(u.Budget)/(1<<20))}})
		}
	}},
	"disk list": {help: "disks in the storage pool", flags: noFlags(func(e *env, args []string) error {
		var ds []storage.Disk
		if err := get(e, "/api/v1/disks", &ds); err != nil {
			return err
		}
		return e.print(ds, []string{"ID", "NODE", "PATH", "STATE", "HEALTH", "FREE GIB", "TOTAL GIB"}, func(i int) []string {
			d := ds[i]
			health := d.Health
			if d.Error != "" {
				health += ": " + d.Error
			}
			state := d.State
			if d.State == storage.DiskDraining {
				state = fmt.Sprintf("%s (%d left)", d.State, d.Remaining)
			}
			return []string{d.ID, d.Node, d.Path, state, health, gib(d.FreeBytes), gib(d.TotalBytes)}
		}, len(ds))
	})},
	"disk add": {usage: "NODE PATH", help: "offer a directory or mounted disk on a node to the pool", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 2, "a node and an absolute path"); err != nil {
			return err
		}
		var d storage.Disk
		if err := send(e, "POST", "/api/v1/disks", map[string]string{"node": args[0], "path": args[1]}, &d); err != nil {
			return err
		}
		return e.printKV(d, [][2]string{{"id", d.ID}, {"node", d.Node}, {"path", d.Path}, {"state", d.State}})
	})},
	"disk drain":    {usage: "DISK", help: "stop placing shards on a disk", flags: noFlags(diskAction("drain"))},
	"disk activate": {usage: "DISK", help: "place shards on a disk again", flags: noFlags(diskAction("activate"))},
	"disk remove": {usage: "DISK", help: "remove a drained disk from the pool", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one disk ID"); err != nil {
			return err
		}
		return send(e, "DELETE", "/api/v1/disks/"+url.PathEscape(args[0]), nil, nil)
	})},

	"audit list": {usage: "[--project P] [--user U] [--action PREFIX] [--limit N]", help: "the audit log, newest first", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		project := fs.String("project", "", "only this project")
		user := fs.String("user", "", "only this user")
		action := fs.String("action", "", "only actions with this prefix, like project.")
		limit := fs.Int("limit", 50, "at most this many entries")
		return func(e *env, args []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"project": *project, "user": *user, "action": *action, "limit": strconv.Itoa(*limit)} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var es []identity.AuditEntry
			if err := get(e, "/api/v1/audit?"+q.Encode(), &es); err != nil {
				return err
			}
			return e.print(es, []string{"TIME", "USER", "ACTION", "RESOURCE", "RESULT", "NODE"}, func(i int) []string {
				x := es[i]
				return []string{x.Time.Format(time.RFC3339), x.UserName, x.Action, x.Resource, x.Result, x.Node}
			}, len(es))
		}
	}},
}

func diskAction(action string) func(e *env, args []string) error {
	return func(e *env, args []string) error {
		if err := needArgs(args, 1, "one disk ID"); err != nil {
			return err
		}
		var d storage.Disk
		if err := send(e, "POST", "/api/v1/disks/"+url.PathEscape(args[0])+"/"+action, nil, &d); err != nil {
			return err
		}
		return e.printKV(d, [][2]string{{"id", d.ID}, {"state", d.State}})
	}
}

func gib(b uint64) string { return strconv.FormatFloat(float64(b)/(1<<30), 'f', 1, 64) }

func get(e *env, path string, out any) error {
	return send(e, "GET", path, nil, out)
}

func send(e *env, method, path string, in, out any) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	return c.do(method, path, in, out)
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func printNodes(e *env, nodes []consensus.NodeStatus) error {
	return e.print(nodes, []string{"NAME", "ADDRESS", "ROLE", "GOSSIP", "HEALTHY", "LEADER"}, func(i int) []string {
		n := nodes[i]
		lead := ""
		if n.Leader {
			lead = "*"
		}
		return []string{n.Name, n.Address, n.Role, n.Gossip, strconv.FormatBool(n.Healthy), lead}
	}, len(nodes))
}

func printProject(e *env, p identity.Project) error {
	return e.printKV(p, [][2]string{{"id", p.ID}, {"name", p.Name}, {"description", p.Description}, {"version", strconv.FormatUint(p.Version, 10)}})
}

func printQuota(e *env, q identity.Quota) error {
	lim := func(v int64) string {
		if v == identity.Unlimited {
			return "unlimited"
		}
		return itoa(v)
	}
	rows := [][3]string{
		{"instances", itoa(q.Usage.Instances), lim(q.Limits.Instances)},
		{"vcpus", itoa(q.Usage.VCPUs), lim(q.Limits.VCPUs)},
		{"ram_mib", itoa(q.Usage.RAMMiB), lim(q.Limits.RAMMiB)},
		{"disk_gib", itoa(q.Usage.DiskGiB), lim(q.Limits.DiskGiB)},
		{"object_gib", itoa(q.Usage.ObjectGiB), lim(q.Limits.ObjectGiB)},
		{"floating_ips", itoa(q.Usage.FloatingIPs), lim(q.Limits.FloatingIPs)},
		{"objects", itoa(q.Usage.Objects), lim(q.Limits.Objects)},
		{"volumes", itoa(q.Usage.Volumes), lim(q.Limits.Volumes)},
		{"volume_gib", itoa(q.Usage.VolumeGiB), lim(q.Limits.VolumeGiB)},
		{"snapshots", itoa(q.Usage.Snapshots), lim(q.Limits.Snapshots)},
		{"networks", itoa(q.Usage.Networks), lim(q.Limits.Networks)},
		{"ports", itoa(q.Usage.Ports), lim(q.Limits.Ports)},
		{"routers", itoa(q.Usage.Routers), lim(q.Limits.Routers)},
	}
	return e.print(q, []string{"RESOURCE", "IN USE", "LIMIT"}, func(i int) []string { return rows[i][:] }, len(rows))
}

// tokenCreate is a command that creates a token through path and prints its
// secret (once); API and metrics tokens differ only in the path.
func tokenCreate(path, help, ttlHelp string) command {
	return command{usage: "NAME [--ttl DURATION]", help: help, flags: func(fs *flag.FlagSet) func(*env, []string) error {
		ttl := fs.Duration("ttl", 0, ttlHelp)
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one token name"); err != nil {
				return err
			}
			var res struct {
				Token  string         `json:"token"`
				Detail identity.Token `json:"detail"`
			}
			if err := send(e, "POST", path, map[string]any{"name": args[0], "ttl_seconds": int64(ttl.Seconds())}, &res); err != nil {
				return err
			}
			if e.output == "json" {
				return e.printKV(res, nil)
			}
			fmt.Fprintln(e.stdout, res.Token)
			return nil
		}
	}}
}

// setDisabled disables or enables a user (cluster admins).
func setDisabled(e *env, args []string, off bool) error {
	if err := needArgs(args, 1, "one user"); err != nil {
		return err
	}
	return send(e, "PATCH", "/api/v1/users/"+url.PathEscape(args[0]), map[string]bool{"disabled": off}, nil)
}
