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
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// We talk to nf_tables over netlink (google/nftables) rather than run the
// nft binary: the appliance image is a u-root userland without it, and one
// netlink batch is as atomic as `nft -f`.

// buildNATRuleset returns the desired table: masquerade what leaves the
// network, let the bridge's traffic out, and let in only replies (floating
// IPs will add their own exceptions). It is pure, so the golden test sees
// exactly what Reconcile applies.
func buildNATRuleset(table, bridge string, cidr netip.Prefix) ruleset {
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
	rule := func(ch *nftables.Chain, comment string, exprs ...[]expr.Any) *nftables.Rule {
		return newRule(t, ch, comment, exprs...)
	}
	return ruleset{
		table:  t,
		chains: []*nftables.Chain{post, fw},
		rules: []*nftables.Rule{
			rule(post, fmt.Sprintf("ip saddr %s ip daddr != %s masquerade", cidr, cidr),
				inCIDR(saddr, expr.CmpOpEq), inCIDR(daddr, expr.CmpOpNeq), []expr.Any{&expr.Masq{}}),
			rule(fw, fmt.Sprintf("iifname %s accept", bridge), iif, verdict(expr.VerdictAccept)),
			rule(fw, fmt.Sprintf("oifname %s ct state established,related accept", bridge), oif, ctReplies(), verdict(expr.VerdictAccept)),
			rule(fw, fmt.Sprintf("oifname %s drop", bridge), oif, verdict(expr.VerdictDrop)),
		},
	}
}

// ctReplies matches packets of connections already seen both ways.
func ctReplies() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// newRule joins exprs into a rule of chain ch. Each rule carries its nft
// spelling as a comment: `nft list table ...` shows it to whoever debugs a
// node, and the golden files too.
func newRule(t *nftables.Table, ch *nftables.Chain, comment string, exprs ...[]expr.Any) *nftables.Rule {
	var all []expr.Any
	for _, p := range exprs {
		all = append(all, p...)
	}
	return &nftables.Rule{Table: t, Chain: ch, Exprs: all, UserData: userdata.AppendString(nil, userdata.TypeComment, comment)}
}

// ifname is an interface name as nf_tables compares it: NUL-padded to IFNAMSIZ.
func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n+"\x00")
	return b
}

// bigBuffers gives the netlink socket room for a whole batch: the kernel
// takes a batch in one message, and a security-group table of a few
// thousand elements is larger than the default socket buffer. (Forced
// past the sysctl limit: we are root. If that is refused, the default
// stays and a big table fails to apply, which fails closed.)
func bigBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 16<<20)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	})
	return nil
}

// apply replaces the table in one netlink batch: create it (so the delete
// cannot fail), delete it, create it with its contents. The kernel applies
// the batch atomically, so no packet sees a half-built table.
func (r ruleset) apply(opts ...nftables.ConnOption) error {
	c, err := nftables.New(append(opts, nftables.WithSockOptions(bigBuffers))...)
	if err != nil {
		return fmt.Errorf("nftables table %s: %w", r.table.Name, err)
	}
	c.AddTable(r.table)
	c.DelTable(r.table)
	c.AddTable(r.table)
	for _, ch := range r.chains {
		c.AddChain(ch)
	}
	// A set's elements go in messages of a few hundred: one netlink message
	// of a large set would be refused as too long. (Still one batch.)
	const chunk = 256
	for _, s := range r.sets {
		first := s.elements[:min(len(s.elements), chunk)]
		if err := c.AddSet(s.set, first); err != nil {
			return fmt.Errorf("nftables table %s: set %s: %w", r.table.Name, s.set.Name, err)
		}
		for rest := s.elements[len(first):]; len(rest) > 0; rest = rest[min(len(rest), chunk):] {
			if err := c.SetAddElements(s.set, rest[:min(len(rest), chunk)]); err != nil {
				return fmt.Errorf("nftables table %s: set %s: %w", r.table.Name, s.set.Name, err)
			}
		}
	}
	for _, rule := range r.rules {
		c.AddRule(rule)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: %w", r.table.Name, err)
	}
	return nil
}

// deleteNFTable removes a table if it is there.
func deleteNFTable(family nftables.TableFamily, name string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("delete nftables table %s: %w", name, err)
	}
	t := &nftables.Table{Family: family, Name: name}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table %s: %w", name, err)
	}
	return nil
}

// String renders the ruleset in the style of `nft --debug=netlink`, one
// line per rule, for the golden test and for logs.
func (r ruleset) String() string {
	var b strings.Builder
	family := map[nftables.TableFamily]string{nftables.TableFamilyIPv4: "ip", nftables.TableFamilyINet: "inet", nftables.TableFamilyBridge: "bridge"}[r.table.Family]
	fmt.Fprintf(&b, "table %s %s\n", family, r.table.Name)
	for _, s := range r.sets {
		fmt.Fprintf(&b, "set %s: %s\n", s.set.Name, s.set.KeyType.Name)
		for _, e := range s.elements {
			if !s.set.Interval {
				fmt.Fprintf(&b, "  %s %s", showData(e.Key[:min(len(e.Key), 16)]), hexData(e.Key[min(len(e.Key), 16):]))
			} else {
				fmt.Fprintf(&b, "  %s - %s", hexData(e.Key), hexData(e.KeyEnd))
			}
			if len(e.Val) > 0 {
				fmt.Fprintf(&b, " : %s", hexData(e.Val))
			}
			b.WriteString("\n")
		}
	}
	for _, ch := range r.chains {
		if ch.Hooknum == nil {
			fmt.Fprintf(&b, "chain %s\n", ch.Name)
		} else {
			hook := map[nftables.ChainHook]string{*nftables.ChainHookPostrouting: "postrouting", *nftables.ChainHookForward: "forward",
				*nftables.ChainHookPrerouting: "prerouting", *nftables.ChainHookInput: "input", *nftables.ChainHookOutput: "output"}[*ch.Hooknum]
			fmt.Fprintf(&b, "chain %s: type %s hook %s priority %d policy %s\n", ch.Name, ch.Type, hook, *ch.Priority, policyName(ch.Policy))
		}
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
		key := map[expr.MetaKey]string{expr.MetaKeyIIFNAME: "iifname", expr.MetaKeyOIFNAME: "oifname", expr.MetaKeyL4PROTO: "l4proto", expr.MetaKeyNFPROTO: "nfproto"}[e.Key]
		return fmt.Sprintf("meta load %s => reg %d", key, e.Register)
	case *expr.Ct:
		key := map[expr.CtKey]string{expr.CtKeySTATE: "state"}[e.Key]
		return fmt.Sprintf("ct load %s => reg %d", key, e.Register)
	case *expr.Masq:
		return "masq"
	case *expr.Verdict:
		return fmt.Sprintf("immediate reg 0 %s", map[expr.VerdictKind]string{expr.VerdictAccept: "accept", expr.VerdictDrop: "drop"}[e.Kind])
	case *expr.Lookup:
		if e.Invert {
			return fmt.Sprintf("lookup reg %d set %s 0x1", e.SourceRegister, e.SetName)
		}
		return fmt.Sprintf("lookup reg %d set %s", e.SourceRegister, e.SetName)
	case *expr.Exthdr:
		return fmt.Sprintf("exthdr load ipv6 %db @ %d + %d present => reg %d", e.Len, e.Type, e.Offset, e.DestRegister)
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
