package cli

import (
	"flag"
	"fmt"
	"net/url"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// enrolTokenCreate is `cairn node enrol-token create`: a one-time token
// that admits one new node, printed with the flags that node needs.
func enrolTokenCreate(fs *flag.FlagSet) func(*env, []string) error {
	ttl := fs.Duration("ttl", consensus.DefaultEnrolTokenTTL, "how long the token is valid (at most 24h)")
	return func(e *env, args []string) error {
		if err := needArgs(args, 0, "no arguments"); err != nil {
			return err
		}
		c, err := e.client()
		if err != nil {
			return err
		}
		var res struct {
			consensus.EnrolToken
			JoinToken string `json:"join_token"`
		}
		if err := c.do("POST", "/api/v1/cluster/enrol-tokens", map[string]string{"ttl": ttl.String()}, &res); err != nil {
			return err
		}
		if e.output == "json" {
			return e.printKV(res, nil)
		}
		fmt.Fprintf(e.stdout, "enrolment token: %s\nexpires: %s (one use)\nstart the new node with: cairn agent --join-token %s --enrol-token %s --join ADDRESS-OF-A-NODE ...\n",
			res.Token, res.Expires.Local().Format(time.RFC3339), res.JoinToken, res.Token)
		return nil
	}
}

func nodePending(e *env, args []string) error {
	var nodes []consensus.PendingNode
	if err := get(e, "/api/v1/cluster/pending", &nodes); err != nil {
		return err
	}
	return e.print(nodes, []string{"NAME", "ADDRESS", "FINGERPRINT", "APPROVED", "LAST SEEN"}, func(i int) []string {
		p := nodes[i]
		return []string{p.Name, p.RaftAddr, p.Fingerprint, fmt.Sprint(p.Approved), p.LastSeen.Local().Format(time.RFC3339)}
	}, len(nodes))
}

// nodeApprove is `cairn node approve NAME --fingerprint FP`: the pending
// node joins on its next request if it asks with the key of that
// fingerprint (shown on its console and by `cairn node pending`).
func nodeApprove(fs *flag.FlagSet) func(*env, []string) error {
	fp := fs.String("fingerprint", "", "the fingerprint the node's console shows (required)")
	return func(e *env, args []string) error {
		if err := needArgs(args, 1, "one node name"); err != nil {
			return err
		}
		if *fp == "" {
			return usageError("--fingerprint is required: compare it with the one the node's console shows")
		}
		c, err := e.client()
		if err != nil {
			return err
		}
		var p consensus.PendingNode
		if err := c.do("POST", "/api/v1/cluster/pending/"+args[0]+"/approve", map[string]string{"fingerprint": *fp}, &p); err != nil {
			return err
		}
		return e.printKV(p, [][2]string{{"node", p.Name}, {"fingerprint", p.Fingerprint}, {"approved", fmt.Sprint(p.Approved)}})
	}
}

// nodeReject is `cairn node reject NAME [--fingerprint FP]`: forget the
// pending node (only its key FP, when given), approved or not.
func nodeReject(fs *flag.FlagSet) func(*env, []string) error {
	fp := fs.String("fingerprint", "", "forget only the key with this fingerprint")
	return func(e *env, args []string) error {
		if err := needArgs(args, 1, "one node name"); err != nil {
			return err
		}
		path := "/api/v1/cluster/pending/" + url.PathEscape(args[0])
		if *fp != "" {
			path += "?fingerprint=" + url.QueryEscape(*fp)
		}
		return send(e, "DELETE", path, nil, nil)
	}
}
