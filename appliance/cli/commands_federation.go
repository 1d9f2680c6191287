package cli

import (
	"flag"
	"fmt"
	"net/url"
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
	commands["federation join"] = command{usage: "HUB_URL --enrol-token TOKEN", help: "enrol this site with a federation hub (cluster admin); the site dials out to it, so it needs no inbound port",
		flags: func(fs *flag.FlagSet) func(*env, []string) error {
			token := fs.String("enrol-token", "", "the one-time enrolment token made on the hub (cairn federation token create)")
			return func(e *env, args []string) error {
				if err := needArgs(args, 1, "the hub's URL (https://HOST:PORT)"); err != nil {
					return err
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
	commands["federation site list"] = command{help: "on a hub: the enrolled sites and whether each is connected",
		flags: noFlags(func(e *env, args []string) error {
			var sites []struct {
				federation.Site
				Connected bool `json:"connected"`
			}
			if err := get(e, "/api/v1/federation/sites", &sites); err != nil {
				return err
			}
			return e.print(sites, []string{"NAME", "ID", "STATE", "CONNECTED", "ENROLLED"}, func(i int) []string {
				s := sites[i]
				state := "enrolled"
				if !s.Active() {
					state = "revoked by " + s.RevokedBy
				}
				return []string{s.Name, s.ID, state, yesNo(s.Connected), s.EnrolledAt.Format(time.RFC3339)}
			}, len(sites))
		})}
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
