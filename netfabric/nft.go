package netfabric

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// We talk to nf_tables over netlink (google/nftables) rather than run the
// nft binary: the appliance image is a u-root userland without it, and one
// netlink batch is as atomic as `nft -f`.

// natRuleset is the whole of netfabric's nftables table for one network.
type natRuleset struct {
	table  *nftables.Table
	chains []*nftables.Chain
	rules  []*nftables.Rule
}

// buildNATRuleset returns the desired table: masquerade what leaves the
// network, let the bridge's traffic out, and let in only replies (floating
// IPs will add their own exceptions). It is pure, so the golden test sees
// exactly what Reconcile applies.
func buildNATRuleset(table, bridge string, cidr netip.Prefix) natRuleset {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: table}
	accept := nftables.ChainPolicyAccept
	post := &nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept}
	fw := &nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept}

	net4 := cidr.Addr().As4()
	mask := make([]byte, 4)
	for i := range cidr.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	inCIDR := func(offset uint32, op expr.CmpOp) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: op, Register: 1, Data: net4[:]},
		}
	}
	const saddr, daddr = 12, 16 // offsets in the IPv4 header
	iif := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(bridge)}}
	oif := []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(bridge)}}
	replies := []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
	verdict := func(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }
	cat := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	// Each rule carries its nft spelling as a comment: `nft list table ip
	// cairn_nat` shows it to whoever debugs a node, and the golden file too.
	rule := func(ch *nftables.Chain, comment string, exprs ...[]expr.Any) *nftables.Rule {
		return &nftables.Rule{Table: t, Chain: ch, Exprs: cat(exprs...),
			UserData: userdata.AppendString(nil, userdata.TypeComment, comment)}
	}
	return natRuleset{
		table:  t,
		chains: []*nftables.Chain{post, fw},
		rules: []*nftables.Rule{
			rule(post, fmt.Sprintf("ip saddr %s ip daddr != %s masquerade", cidr, cidr),
				inCIDR(saddr, expr.CmpOpEq), inCIDR(daddr, expr.CmpOpNeq), []expr.Any{&expr.Masq{}}),
			rule(fw, fmt.Sprintf("iifname %s accept", bridge), iif, []expr.Any{verdict(expr.VerdictAccept)}),
			rule(fw, fmt.Sprintf("oifname %s ct state established,related accept", bridge), oif, replies, []expr.Any{verdict(expr.VerdictAccept)}),
			rule(fw, fmt.Sprintf("oifname %s drop", bridge), oif, []expr.Any{verdict(expr.VerdictDrop)}),
		},
	}
}

// ifname is an interface name as nf_tables compares it: NUL-padded to IFNAMSIZ.
func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n+"\x00")
	return b
}

// apply replaces the table in one netlink batch: create it (so the delete
// cannot fail), delete it, create it with its contents. The kernel applies
// the batch atomically, so no packet sees a half-built table.
func (r natRuleset) apply() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables table %s: %w", r.table.Name, err)
	}
	c.AddTable(r.table)
	c.DelTable(r.table)
	c.AddTable(r.table)
	for _, ch := range r.chains {
		c.AddChain(ch)
	}
	for _, rule := range r.rules {
		c.AddRule(rule)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: %w", r.table.Name, err)
	}
	return nil
}

// deleteNFTable removes an IPv4 table if it is there.
func deleteNFTable(name string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("delete nftables table %s: %w", name, err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: name}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table %s: %w", name, err)
	}
	return nil
}

// String renders the ruleset in the style of `nft --debug=netlink`, one
// line per rule, for the golden test and for logs.
func (r natRuleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s\n", r.table.Name)
	for _, ch := range r.chains {
		hook := map[nftables.ChainHook]string{*nftables.ChainHookPostrouting: "postrouting", *nftables.ChainHookForward: "forward"}[*ch.Hooknum]
		fmt.Fprintf(&b, "chain %s: type %s hook %s priority %d policy %s\n", ch.Name, ch.Type, hook, *ch.Priority, policyName(ch.Policy))
		for _, rule := range r.rules {
			if rule.Chain != ch {
				continue
			}
			parts := make([]string, len(rule.Exprs))
			for i, e := range rule.Exprs {
				parts[i] = "[ " + describeExpr(e) + " ]"
			}
			comment, _ := userdata.GetString(rule.UserData, userdata.TypeComment)
			fmt.Fprintf(&b, "  # %s\n  %s\n", comment, strings.Join(parts, " "))
		}
	}
	return b.String()
}

func policyName(p *nftables.ChainPolicy) string {
	if p != nil && *p == nftables.ChainPolicyDrop {
		return "drop"
	}
	return "accept"
}

func describeExpr(e expr.Any) string {
	switch e := e.(type) {
	case *expr.Payload:
		base := map[expr.PayloadBase]string{expr.PayloadBaseLLHeader: "link", expr.PayloadBaseNetworkHeader: "network", expr.PayloadBaseTransportHeader: "transport"}[e.Base]
		return fmt.Sprintf("payload load %db @ %s header + %d => reg %d", e.Len, base, e.Offset, e.DestRegister)
	case *expr.Bitwise:
		return fmt.Sprintf("bitwise reg %d = ( reg %d & %s ) ^ %s", e.DestRegister, e.SourceRegister, hexData(e.Mask), hexData(e.Xor))
	case *expr.Cmp:
		op := map[expr.CmpOp]string{expr.CmpOpEq: "eq", expr.CmpOpNeq: "neq", expr.CmpOpLt: "lt", expr.CmpOpLte: "lte", expr.CmpOpGt: "gt", expr.CmpOpGte: "gte"}[e.Op]
		return fmt.Sprintf("cmp %s reg %d %s", op, e.Register, showData(e.Data))
	case *expr.Meta:
		key := map[expr.MetaKey]string{expr.MetaKeyIIFNAME: "iifname", expr.MetaKeyOIFNAME: "oifname"}[e.Key]
		return fmt.Sprintf("meta load %s => reg %d", key, e.Register)
	case *expr.Ct:
		key := map[expr.CtKey]string{expr.CtKeySTATE: "state"}[e.Key]
		return fmt.Sprintf("ct load %s => reg %d", key, e.Register)
	case *expr.Masq:
		return "masq"
	case *expr.Verdict:
		return fmt.Sprintf("immediate reg 0 %s", map[expr.VerdictKind]string{expr.VerdictAccept: "accept", expr.VerdictDrop: "drop"}[e.Kind])
	}
	return fmt.Sprintf("%T %+v", e, e)
}

func hexData(b []byte) string { return "0x" + hex.EncodeToString(b) }

// showData prints NUL-padded interface names as text, everything else as hex.
func showData(b []byte) string {
	if s := string(bytes.TrimRight(b, "\x00")); len(b) == 16 && s != "" && !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r > '~' }) {
		return fmt.Sprintf("%q", s)
	}
	return hexData(b)
}
