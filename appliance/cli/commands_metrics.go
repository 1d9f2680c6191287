package cli

import (
	"flag"
	"fmt"

	"github.com/cairnhq/cairn/appliance/identity"
)

// metricsCommands make the token Prometheus scrapes /metrics with; it is
// listed and revoked with the other tokens (token list, token revoke).
var metricsCommands = map[string]command{
	"metrics token create": {usage: "NAME [--ttl DURATION]", help: "create a token that reads /metrics only, for Prometheus (cluster admin; the secret is shown once)", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		ttl := fs.Duration("ttl", 0, "lifetime; 0 means no expiry")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one token name"); err != nil {
				return err
			}
			var res struct {
				Token  string         `json:"token"`
				Detail identity.Token `json:"detail"`
			}
			if err := send(e, "POST", "/api/v1/metrics/tokens", map[string]any{"name": args[0], "ttl_seconds": int64(ttl.Seconds())}, &res); err != nil {
				return err
			}
			if e.output == "json" {
				return e.printKV(res, nil)
			}
			fmt.Fprintln(e.stdout, res.Token)
			return nil
		}
	}},
}

func init() {
	for k, v := range metricsCommands {
		commands[k] = v
	}
}
