package cli

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/cairnhq/cairn/appliance/federation"
)

// The federation nouns: a site joins a hub and leaves it; on a hub, its
// admins make enrolment tokens, list the sites and revoke them.
func init() {
	commands["federation status"] = command{help: "this site's membership of a federation hub, and whether its session is up",
		flags: noFlags(func(e *env, args []string) error {
			var st federation.Status
			if err := get(e, "/api/v1/federation", &st); err != nil {
				return err
			}
			if !st.Member {
				return e.printKV(st, [][2]string{{"member", "no"}})
			}
			return e.printKV(st, [][2]string{{"hub", st.HubURL}, {"site", st.SiteName}, {"site id", st.SiteID}, {"connected", yesNo(st.Connected)}, {"since", st.Since.Format(time.RFC3339)}, {"last error", st.LastError}})
		})}
	commands["federation join"] = command{usage: "HUB_URL --enrol-token TOKEN (or --token TOKEN)", help: "enrol this site with a federation hub (cluster admin); the site dials out to it, so it needs no inbound port",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			token := fs.String("enrol-token", "", "the one-time enrolment token made on the hub (cairn federation token create)")
			return func(e *env, args []string) error {
				if err := needArgs(args, 1, "the hub's URL (https://HOST:PORT)"); err != nil {
					return err
				}
				flagged := false
				e.fs.Visit(func(f *flag.Flag) { flagged = flagged || f.Name == "token" })
				if *token == "" && flagged && federation.IsEnrolToken(e.settings.Token) {
					// The enrolment token given as --token (the flag of
					// every command's API token): taken as meant, and the
					// API token read from where it is kept.
					*token, e.settings.Token = e.settings.Token, ""
					e.settings = e.settings.resolve()
				}
				if federation.IsEnrolToken(e.settings.Token) {
					return fmt.Errorf("the API token is an enrolment token: give the enrolment token with --enrol-token, and sign in (cairn login) for the API token")
				}
				if *token == "" {
					return fmt.Errorf("--enrol-token is required: make one on the hub with cairn federation token create SITE")
				}
				var st federation.Status
				if err := send(e, "POST", "/api/v1/federation/join", map[string]string{"hub_url": args[0], "token": *token}, &st); err != nil {
					return err
				}
				return e.printKV(st, [][2]string{{"hub", st.HubURL}, {"site", st.SiteName}, {"site id", st.SiteID}})
			}
		}}
	commands["federation leave"] = command{help: "leave the federation hub (cluster admin); the hub is told if it can be reached",
		flags: noFlags(func(e *env, args []string) error {
			return send(e, "POST", "/api/v1/federation/leave", nil, nil)
		})}
	commands["federation token create"] = command{usage: "SITE [--ttl 24h]", help: "on a hub: a one-time enrolment token for the site to be called SITE (hub admin); shown once",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			ttl := fs.String("ttl", "", "how long the token admits (default 24h, at most 168h)")
			return func(e *env, args []string) error {
				if err := needArgs(args, 1, "the site's name"); err != nil {
					return err
				}
				var out struct {
					federation.Token
					Text string `json:"token"`
				}
				if err := send(e, "POST", "/api/v1/federation/tokens", map[string]string{"site": args[0], "ttl": *ttl}, &out); err != nil {
					return err
				}
				return e.printKV(out, [][2]string{{"token", out.Text}, {"site", out.Site}, {"expires", out.ExpiresAt.Format(time.RFC3339)}})
			}
		}}
	commands["federation site list"] = command{usage: "[--group G] [--health ok|degraded] [--degraded-volumes] [--free-storage-below PCT] [--unreachable]",
		help: "on a hub: the sites you have a role on, whether each is connected, and its cached inventory's summary and age",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			group := fs.String("group", "", "only the sites of this group")
			health := fs.String("health", "", "only sites of this health: ok or degraded")
			degraded := fs.Bool("degraded-volumes", false, "only sites with a volume below full redundancy")
			below := fs.String("free-storage-below", "", "only sites with less free storage, in percent")
			unreachable := fs.Bool("unreachable", false, "only sites not connected now")
			return func(e *env, args []string) error {
				q := url.Values{}
				for k, v := range map[string]string{"group": *group, "health": *health, "free_storage_below": *below} {
					if v != "" {
						q.Set(k, v)
					}
				}
				if *degraded {
					q.Set("degraded_volumes", "true")
				}
				if *unreachable {
					q.Set("unreachable", "true")
				}
				var sites []federation.SiteStatus
				if err := get(e, "/api/v1/federation/sites?"+q.Encode(), &sites); err != nil {
					return err
				}
				return e.print(sites, []string{"NAME", "GROUP", "STATE", "CONNECTED", "AGE", "HEALTH", "NODES", "VMS", "FREE", "VERSION"}, func(i int) []string {
					s := sites[i]
					state := "enrolled"
					if !s.Active() {
						state = "revoked by " + s.RevokedBy
					}
					return []string{s.Name, s.Group, state, yesNo(s.Connected), (time.Duration(s.AgeSeconds) * time.Second).String(), s.Health,
						fmt.Sprint(s.Nodes), fmt.Sprint(s.VMs), fmt.Sprintf("%.0f%%", s.FreeStoragePercent), s.Version}
				}, len(sites))
			}
		}}
	commands["federation site show"] = command{usage: "SITE", help: "on a hub: one site with its cached inventory (-o json for all of it)",
		flags: noFlags(func(e *env, args []string) error {
			if err := needArgs(args, 1, "one site"); err != nil {
				return err
			}
			var d federation.SiteDetail
			if err := get(e, "/api/v1/federation/sites/"+url.PathEscape(args[0]), &d); err != nil {
				return err
			}
			return e.printKV(d, [][2]string{{"site", d.Name}, {"id", d.ID}, {"group", d.Group}, {"your role", string(d.Role)}, {"connected", yesNo(d.Connected)},
				{"last contact", d.LastContact.Format(time.RFC3339)}, {"inventory age", (time.Duration(d.AgeSeconds) * time.Second).String()},
				{"health", d.Health}, {"alerts", fmt.Sprint(d.Alerts)}, {"version", d.Version}, {"nodes", fmt.Sprint(d.Nodes)}, {"vms", fmt.Sprint(d.VMs)},
				{"volumes", fmt.Sprintf("%d (%d degraded)", d.Volumes, d.DegradedVolumes)}, {"free storage", fmt.Sprintf("%.0f%%", d.FreeStoragePercent)}})
		})}
	commands["federation site group"] = command{usage: "SITE GROUP", help: "on a hub: put a site in a group (\"\" for none; hub admin); roles given on the group reach it",
		flags: noFlags(func(e *env, args []string) error {
			if err := needArgs(args, 2, "a site and a group"); err != nil {
				return err
			}
			return send(e, "PUT", "/api/v1/federation/sites/"+url.PathEscape(args[0])+"/group", map[string]string{"group": args[1]}, nil)
		})}
	commands["federation grant"] = command{usage: "USER (--site S | --group G) --role admin|operator|read-only|none",
		help: "on a hub: give a hub user a role on a site or a group of sites, or take it away with none (hub admin)",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			site := fs.String("site", "", "the site")
			group := fs.String("group", "", "the group of sites")
			role := fs.String("role", "", "admin, operator, read-only, or none")
			return func(e *env, args []string) error {
				if err := needArgs(args, 1, "one hub user"); err != nil {
					return err
				}
				if *role == "" {
					return fmt.Errorf("--role is required: admin, operator, read-only, or none")
				}
				r := *role
				if r == "none" {
					r = ""
				}
				return send(e, "PUT", "/api/v1/federation/grants", federation.GrantSpec{User: args[0], Site: *site, Group: *group, Role: federation.HubRole(r)}, nil)
			}
		}}
	commands["federation grant list"] = command{help: "on a hub: hub users' roles on sites and groups",
		flags: noFlags(func(e *env, args []string) error {
			var gs []federation.Grant
			if err := get(e, "/api/v1/federation/grants", &gs); err != nil {
				return err
			}
			return e.print(gs, []string{"USER", "ON", "ROLE"}, func(i int) []string { return []string{gs[i].UserName, gs[i].Scope, string(gs[i].Role)} }, len(gs))
		})}
	commands["federation intent create"] = command{usage: "(--site S | --group G)... --steps FILE [--key K] [--expires-in 24h]",
		help: "on a hub: queue a bulk operation, the steps of FILE (a JSON list of {method, path, body}) on every site named, as you; sites that are away get it when they are back",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			var sites, groups stringList
			fs.Var(&sites, "site", "a site (repeat for more)")
			fs.Var(&groups, "group", "a group of sites (repeat for more)")
			steps := fs.String("steps", "", "a file with the steps: [{\"method\": \"POST\", \"path\": \"/api/v1/projects\", \"body\": {...}}, ...]")
			key := fs.String("key", "", "your key for this operation: run again with the same key, it is not queued twice")
			expires := fs.String("expires-in", "", "how long sites that are away may still get it (default 24h, at most 168h)")
			return func(e *env, args []string) error {
				if *steps == "" {
					return fmt.Errorf("--steps is required: a JSON file of the calls to make")
				}
				raw, err := os.ReadFile(*steps)
				if err != nil {
					return err
				}
				spec := federation.IntentSpec{Key: *key, Sites: sites, Groups: groups, ExpiresIn: *expires}
				if err := json.Unmarshal(raw, &spec.Steps); err != nil {
					return fmt.Errorf("%s: %w", *steps, err)
				}
				var in federation.Intent
				if err := send(e, "POST", "/api/v1/federation/intents", spec, &in); err != nil {
					return err
				}
				return e.printKV(in, [][2]string{{"intent", in.ID}, {"state", in.State()}, {"sites", fmt.Sprint(in.Total)}, {"expires", in.ExpiresAt.Format(time.RFC3339)}})
			}
		}}
	commands["federation intent list"] = command{usage: "[--limit N] [--before SEQ]", help: "on a hub: bulk operations, newest first, with how many sites each is pending, done or failed on",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			limit := fs.Int("limit", 0, "how many (default 100, at most 1000)")
			before := fs.Uint64("before", 0, "only those made before the intent with this seq (the next page: what the last page said)")
			return func(e *env, args []string) error {
				q := url.Values{}
				if *limit > 0 {
					q.Set("limit", fmt.Sprint(*limit))
				}
				if *before > 0 {
					q.Set("before", fmt.Sprint(*before))
				}
				var page federation.IntentPage
				if err := get(e, "/api/v1/federation/intents?"+q.Encode(), &page); err != nil {
					return err
				}
				ins := page.Intents
				if err := e.print(page, []string{"ID", "BY", "STATE", "SITES", "PENDING", "DONE", "FAILED", "CREATED", "EXPIRES"}, func(i int) []string {
					in := ins[i]
					return []string{in.ID, in.UserName, in.State(), fmt.Sprint(in.Total), fmt.Sprint(in.Pending), fmt.Sprint(in.Done), fmt.Sprint(in.Failed),
						in.CreatedAt.Format(time.RFC3339), in.ExpiresAt.Format(time.RFC3339)}
				}, len(ins)); err != nil {
					return err
				}
				if page.Next != 0 && e.output != "json" {
					fmt.Fprintf(e.stdout, "more: cairn federation intent list --before %d\n", page.Next)
				}
				return nil
			}
		}}
	commands["federation intent show"] = command{usage: "ID", help: "on a hub: a bulk operation's progress and answers on every site",
		flags: noFlags(func(e *env, args []string) error {
			if err := needArgs(args, 1, "one intent"); err != nil {
				return err
			}
			var in federation.Intent
			if err := get(e, "/api/v1/federation/intents/"+url.PathEscape(args[0]), &in); err != nil {
				return err
			}
			return e.print(in, []string{"SITE", "STATE", "STEPS DONE", "MESSAGE"}, func(i int) []string {
				s := in.Sites[i]
				return []string{s.Site, s.State, fmt.Sprintf("%d/%d", s.Done, len(in.Steps)), s.Message}
			}, len(in.Sites))
		})}
	commands["federation image upload"] = command{usage: "NAME FILE", help: "on a hub: upload an image for sites (hub admin); it is kept by its SHA-256",
		flags: noFlags(func(e *env, args []string) error {
			if err := needArgs(args, 2, "an image name and a file"); err != nil {
				return err
			}
			var im federation.HubImage
			if err := uploadFile(e, args[1], "/api/v1/federation/images?"+url.Values{"name": {args[0]}}.Encode(), &im); err != nil {
				return err
			}
			return e.printKV(im, [][2]string{{"image", im.Name}, {"sha256", im.SHA256}, {"size", fmt.Sprint(im.Size)}})
		})}
	commands["federation image list"] = command{help: "on a hub: the images it holds for sites",
		flags: noFlags(func(e *env, args []string) error {
			var ims []federation.HubImage
			if err := get(e, "/api/v1/federation/images", &ims); err != nil {
				return err
			}
			return e.print(ims, []string{"NAME", "SHA256", "SIZE", "ON"}, func(i int) []string {
				return []string{ims[i].Name, ims[i].SHA256, fmt.Sprint(ims[i].Size), fmt.Sprint(ims[i].Holders)}
			}, len(ims))
		})}
	commands["federation image push"] = command{usage: "IMAGE (--site S | --group G)... --project P [--visibility V] [--rate-kib N]",
		help: "on a hub: push an image to sites, into a project of each, at most N KiB/s per site; it goes on from where a broken link left it",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			var sites, groups stringList
			fs.Var(&sites, "site", "a site (repeat for more)")
			fs.Var(&groups, "group", "a group of sites (repeat for more)")
			project := fs.String("project", "", "the project the image goes into at each site")
			visibility := fs.String("visibility", "", "the image's visibility at each site (project or public)")
			rateKiB := fs.Int64("rate-kib", 0, "at most this many KiB/s per site (0: no limit)")
			return func(e *env, args []string) error {
				if err := needArgs(args, 1, "one image"); err != nil {
					return err
				}
				var ds []federation.Distribution
				spec := federation.PushSpec{Sites: sites, Groups: groups, Project: *project, Visibility: *visibility, RateKiB: *rateKiB}
				if err := send(e, "POST", "/api/v1/federation/images/"+url.PathEscape(args[0])+"/push", spec, &ds); err != nil {
					return err
				}
				return printPushes(e, ds)
			}
		}}
	commands["federation image pushes"] = command{usage: "[IMAGE]", help: "on a hub: image pushes with each site's progress",
		flags: noFlags(func(e *env, args []string) error {
			q := url.Values{}
			if len(args) > 0 {
				q.Set("image", args[0])
			}
			var ds []federation.Distribution
			if err := get(e, "/api/v1/federation/pushes?"+q.Encode(), &ds); err != nil {
				return err
			}
			return printPushes(e, ds)
		})}
	commands["federation vm list"] = command{usage: "[--name N] [--project P]", help: "on a hub: VMs across the sites you have a role on, from their cached inventories",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			name := fs.String("name", "", "only VMs of this name")
			project := fs.String("project", "", "only VMs of projects of this name")
			return func(e *env, args []string) error {
				q := url.Values{}
				if *name != "" {
					q.Set("name", *name)
				}
				if *project != "" {
					q.Set("project", *project)
				}
				var vms []federation.SiteVM
				if err := get(e, "/api/v1/federation/vms?"+q.Encode(), &vms); err != nil {
					return err
				}
				return e.print(vms, []string{"SITE", "PROJECT", "NAME", "STATE", "NODE"}, func(i int) []string {
					v := vms[i]
					return []string{v.Site, v.Project, v.Name, v.State, v.Node}
				}, len(vms))
			}
		}}
	commands["federation site revoke"] = command{usage: "SITE", help: "on a hub: revoke a site (hub admin); its certificate stops working; it may enrol again with a new token",
		flags: noFlags(func(e *env, args []string) error {
			if err := needArgs(args, 1, "one site"); err != nil {
				return err
			}
			return send(e, "POST", "/api/v1/federation/sites/"+url.PathEscape(args[0])+"/revoke", nil, nil)
		})}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func printPushes(e *env, ds []federation.Distribution) error {
	return e.print(ds, []string{"IMAGE", "SITE", "STATE", "PROGRESS", "RESUMES", "MESSAGE"}, func(i int) []string {
		d := ds[i]
		pct := 0.0
		if d.Size > 0 {
			pct = 100 * float64(d.Received) / float64(d.Size)
		}
		return []string{d.Name, d.Site, d.State, fmt.Sprintf("%.0f%%", pct), fmt.Sprint(d.Resumes), d.Message}
	}, len(ds))
}
