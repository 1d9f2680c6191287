package cli

// metricsCommands make the token Prometheus scrapes /metrics with; it is
// listed and revoked with the other tokens (token list, token revoke).
var metricsCommands = map[string]command{
	"metrics token create": tokenCreate("/api/v1/metrics/tokens",
		"create a token that reads /metrics only, for Prometheus (cluster admin; the secret is shown once)",
		"lifetime; 0 means no expiry"),
}

func init() {
	for k, v := range metricsCommands {
		commands[k] = v
	}
}
