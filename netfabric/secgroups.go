package netfabric

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Security groups, as Neutron has them: a port on a project network is in
// one or more of its project's groups, and what it may send and receive is
// the union of their rules, statefully (replies to an allowed connection
// pass both ways). Everything else is dropped.
//
// Every project has a group named default, which a new port joins unless
// told otherwise: its members may reach each other, and may send anything;
// nothing else reaches them. Its ID is derived from the project's
// (DefaultGroupID), so every command can name it before it exists; the
// FSM makes it, with its four rules, the first time a command needs it,
// and its rows are the same on every replica. A port made before security
// groups existed (none recorded) is filtered as a member of default.
//
// The cluster's NAT network (the default network) has no security groups:
// its guests are reached from outside only through NAT, and port security
// still holds there.

// Security groups' commands.
const (
	MsgCreateSecurityGroup     consensus.MessageType = 389
	MsgDeleteSecurityGroup     consensus.MessageType = 390
	MsgAddSecurityGroupRules   consensus.MessageType = 391
	MsgDeleteSecurityGroupRule consensus.MessageType = 392
	MsgUpdatePort              consensus.MessageType = 393
)

const tSecGroups = "security_groups"

// Limits. A group of 1,000 rules costs a packet what one of ten does (the
// rules become set elements), but each rule is in every node's tables once
// per port of the group.
const (
	maxRulesPerGroup   = 1000
	maxGroupsPerPort   = 8
	maxGroupsInProject = 100
	maxAddressPairs    = 10
	maxGroupElements   = 2000 // a node's limit per port is maxPortElements
)

// DefaultGroupName is the name of every project's default group.
const DefaultGroupName = "default"

// SecurityGroup is a project's named set of rules.
type SecurityGroup struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Project     string    `json:"project"`
	Description string    `json:"description,omitempty"`
	Rules       []Rule    `json:"rules"`
	CreatedAt   time.Time `json:"created_at"`
	Version     uint64    `json:"version"`
}

// Rule allows one kind of traffic into (ingress) or out of (egress) the
// group's ports. Empty fields match everything.
type Rule struct {
	ID        string `json:"id"`
	Direction string `json:"direction"` // ingress or egress
	EtherType string `json:"ethertype"` // IPv4 or IPv6
	// Protocol is a name (tcp, udp, icmp, icmpv6, sctp, udplite, dccp,
	// gre, esp, ah, vrrp) or a number 0-255; empty: any.
	Protocol string `json:"protocol,omitempty"`
	// PortMin-PortMax is the destination port range, for protocols with
	// ports; 0: every port.
	PortMin int `json:"port_min,omitempty"`
	PortMax int `json:"port_max,omitempty"`
	// ICMPType and ICMPCode narrow an icmp or icmpv6 rule; nil: any.
	ICMPType *int `json:"icmp_type,omitempty"`
	ICMPCode *int `json:"icmp_code,omitempty"`
	// RemoteCIDR or RemoteGroup is the other end: the sender of ingress
	// traffic, the receiver of egress. Neither: anywhere. RemoteGroup is a
	// group of the same project, meaning the addresses of its ports.
	RemoteCIDR  string `json:"remote_cidr,omitempty"`
	RemoteGroup string `json:"remote_group,omitempty"`
	Description string `json:"description,omitempty"`
}

// AddressPair lets a port also send as another address (and MAC), as
// Neutron's allowed_address_pairs: a virtual IP that VRRP moves between
// two VMs, for one. The address also counts as the port's in remote
// groups.
type AddressPair struct {
	IP  string `json:"ip"`            // one IPv4 address
	MAC string `json:"mac,omitempty"` // default: the port's
}

// DeleteSecurityGroupCmd deletes a group no port or rule uses.
type DeleteSecurityGroupCmd struct {
	ID      string `json:"id"`
	Project string `json:"project"`
}

// AddRulesCmd adds rules to a group; all or none.
type AddRulesCmd struct {
	Group   string    `json:"group"`
	Project string    `json:"project"`
	Rules   []Rule    `json:"rules"`
	At      time.Time `json:"at"` // when a default group made now was created
}

// DeleteRuleCmd deletes one rule of a group.
type DeleteRuleCmd struct {
	Group   string    `json:"group"`
	Project string    `json:"project"`
	Rule    string    `json:"rule"`
	At      time.Time `json:"at"`
}

// UpdatePortCmd changes a port's groups and address pairs; a nil field is
// left as it is.
type UpdatePortCmd struct {
	Port           string         `json:"port"`
	Project        string         `json:"project"`
	SecurityGroups *[]string      `json:"security_groups,omitempty"`
	AddressPairs   *[]AddressPair `json:"allowed_address_pairs,omitempty"`
	// PairRules are the rules AddressPairs are checked by: 0 in commands
	// written before IPv6 pairs (one IPv4 address of the network's
	// subnet each; the gateway was the service's to refuse), PairRulesV6
	// since. Old log entries replay as they applied.
	PairRules int       `json:"pair_rules,omitempty"`
	At        time.Time `json:"at"`
}

// PairRulesV6 checks address pairs as IPv4 or IPv6 addresses of the
// network's subnets, never the gateway's.
const PairRulesV6 = 1

var (
	groupIDRE = regexp.MustCompile(`^sg-[0-9a-f]{16}$`)
	ruleIDRE  = regexp.MustCompile(`^sg-[0-9a-f]{16}-[0-9a-z]{1,20}$`)
)

// DefaultGroupID is the ID of project's default group.
func DefaultGroupID(project string) string {
	h := sha256.Sum256([]byte("cairn default security group\x00" + project))
	return "sg-" + hex.EncodeToString(h[:8])
}

// defaultGroup is project's default group as it is first made.
func defaultGroup(project string, at time.Time) SecurityGroup {
	id := DefaultGroupID(project)
	return SecurityGroup{ID: id, Name: DefaultGroupName, Project: project, CreatedAt: at,
		Description: "Members reach each other and may send anything; nothing else reaches them",
		Rules: []Rule{
			{ID: id + "-1", Direction: "ingress", EtherType: "IPv4", RemoteGroup: id},
			{ID: id + "-2", Direction: "ingress", EtherType: "IPv6", RemoteGroup: id},
			{ID: id + "-3", Direction: "egress", EtherType: "IPv4"},
			{ID: id + "-4", Direction: "egress", EtherType: "IPv6"},
		}}
}

func registerSecurityGroups(reg *consensus.Registry) {
	consensus.RegisterTable[SecurityGroup](reg, &memdb.TableSchema{Name: tSecGroups, Indexes: map[string]*memdb.IndexSchema{
		"id":      {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"project": {Name: "project", Indexer: &memdb.StringFieldIndex{Field: "Project"}},
	}})
	// A project's own security groups keep it; its default group, made
	// for it, goes with it (its VMs' ports, which use it, keep the project
	// through the quota's usage).
	identity.HoldProjects(identity.ProjectHolder{Kind: "security groups",
		Held: func(txn *memdb.Txn, project string) []string {
			var names []string
			for _, g := range consensus.All[SecurityGroup](txn, tSecGroups, "project", project) {
				if g.Name != DefaultGroupName {
					names = append(names, g.Name)
				}
			}
			return names
		},
		Sweep: func(tx *consensus.Tx, project string) error {
			for _, g := range consensus.All[SecurityGroup](tx.Txn, tSecGroups, "project", project) {
				if err := tx.Delete(tSecGroups, &g); err != nil {
					return err
				}
			}
			return nil
		}})
	consensus.Handle(reg, MsgCreateSecurityGroup, "CreateSecurityGroup", applyCreateSecurityGroup)
	consensus.Handle(reg, MsgDeleteSecurityGroup, "DeleteSecurityGroup", applyDeleteSecurityGroup)
	consensus.Handle(reg, MsgAddSecurityGroupRules, "AddSecurityGroupRules", applyAddRules)
	consensus.Handle(reg, MsgDeleteSecurityGroupRule, "DeleteSecurityGroupRule", applyDeleteRule)
	consensus.Handle(reg, MsgUpdatePort, "UpdatePort", applyUpdatePort)
}

// GetSecurityGroup returns the group with this ID, or nil.
func GetSecurityGroup(txn *memdb.Txn, id string) *SecurityGroup {
	return consensus.First[SecurityGroup](txn, tSecGroups, "id", id)
}

// SecurityGroupsOf returns project's groups by name, its default group
// among them whether or not it has been made yet.
func SecurityGroupsOf(txn *memdb.Txn, project string) []SecurityGroup {
	out := []SecurityGroup{}
	seenDefault := false
	if it, err := txn.Get(tSecGroups, "project", project); err == nil {
		for obj := it.Next(); obj != nil; obj = it.Next() {
			g := obj.(*SecurityGroup)
			seenDefault = seenDefault || g.ID == DefaultGroupID(project)
			out = append(out, *g)
		}
	}
	if !seenDefault {
		out = append(out, defaultGroup(project, time.Time{}))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// groupFor returns project's group id, making the default group if that
// is the one named and it does not exist yet.
func groupFor(tx *consensus.Tx, project, id string, at time.Time) (*SecurityGroup, error) {
	g := GetSecurityGroup(tx.Txn, id)
	if g != nil && g.Project == project {
		return g, nil
	}
	if g == nil && project != "" && id == DefaultGroupID(project) {
		if _, err := identity.Limits(tx, project); err != nil {
			return nil, err // no such project
		}
		g := defaultGroup(project, at)
		g.Version = tx.Index
		return &g, tx.Insert(tSecGroups, &g)
	}
	return nil, consensus.Errorf(consensus.CodeNotFound, "security group %q not found", id)
}

func applyCreateSecurityGroup(tx *consensus.Tx, g *SecurityGroup) (any, error) {
	if _, err := identity.Limits(tx, g.Project); err != nil {
		return nil, err
	}
	if g.ID == DefaultGroupID(g.Project) {
		// Made on demand; asking for it again is not an error.
		return groupFor(tx, g.Project, g.ID, g.CreatedAt)
	}
	if !groupIDRE.MatchString(g.ID) {
		return nil, consensus.Errorf(consensus.CodeInvalid, "security group id %q is not of the form sg-<16 hex digits>", g.ID)
	}
	if strings.HasPrefix(g.Name, "sg-") {
		return nil, consensus.Errorf(consensus.CodeInvalid, "security group name %q: names starting sg- are reserved for IDs", g.Name)
	}
	if GetSecurityGroup(tx.Txn, g.ID) != nil {
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "security group %s already exists", g.ID)
	}
	if !nameRE.MatchString(g.Name) {
		return nil, consensus.Errorm(consensus.CodeInvalid, "name_rule", "security group name %q must be 1-63 letters, digits, dots, dashes or underscores", g.Name)
	}
	if g.Name == DefaultGroupName || groupIDRE.MatchString(g.Name) {
		return nil, consensus.Errorf(consensus.CodeInvalid, "security group name %q is reserved: choose another", g.Name)
	}
	if len(g.Description) > 255 {
		return nil, consensus.Errorf(consensus.CodeInvalid, "security group description: at most 255 characters")
	}
	groups := SecurityGroupsOf(tx.Txn, g.Project)
	for _, o := range groups {
		if o.Name == g.Name {
			return nil, consensus.Errorm(consensus.CodeAlreadyExists, "group_exists", "a security group named %q already exists in this project", g.Name)
		}
	}
	if len(groups) >= maxGroupsInProject {
		return nil, consensus.Errorf(consensus.CodeConflict, "a project has at most %d security groups", maxGroupsInProject)
	}
	row := *g
	row.Rules = nil
	rules, err := checkRules(tx, &row, g.Rules)
	if err != nil {
		return nil, err
	}
	row.Rules, row.Version = rules, tx.Index
	return &row, tx.Insert(tSecGroups, &row)
}

func applyDeleteSecurityGroup(tx *consensus.Tx, c *DeleteSecurityGroupCmd) (any, error) {
	if c.ID == DefaultGroupID(c.Project) {
		return nil, consensus.Errorf(consensus.CodeConflict, "the default security group cannot be deleted")
	}
	g := GetSecurityGroup(tx.Txn, c.ID)
	if g == nil || g.Project != c.Project {
		return nil, consensus.Errorf(consensus.CodeNotFound, "security group %q not found", c.ID)
	}
	for _, p := range AllPorts(tx.Txn) {
		if p.Project == g.Project && containsString(p.SecurityGroups, g.ID) {
			return nil, consensus.Errorf(consensus.CodeConflict, "security group %s is in use by port %s", g.Name, p.ID)
		}
	}
	for _, o := range SecurityGroupsOf(tx.Txn, g.Project) {
		for _, r := range o.Rules {
			if o.ID != g.ID && r.RemoteGroup == g.ID {
				return nil, consensus.Errorf(consensus.CodeConflict, "security group %s is the remote group of a rule of group %s", g.Name, o.Name)
			}
		}
	}
	return nil, tx.Delete(tSecGroups, g)
}

func applyAddRules(tx *consensus.Tx, c *AddRulesCmd) (any, error) {
	g, err := groupFor(tx, c.Project, c.Group, c.At)
	if err != nil {
		return nil, err
	}
	row := *g
	rules, err := checkRules(tx, &row, c.Rules)
	if err != nil {
		return nil, err
	}
	row.Rules, row.Version = rules, tx.Index
	return &row, tx.Insert(tSecGroups, &row)
}

func applyDeleteRule(tx *consensus.Tx, c *DeleteRuleCmd) (any, error) {
	g, err := groupFor(tx, c.Project, c.Group, c.At)
	if err != nil {
		return nil, err
	}
	row := *g
	row.Rules = nil
	found := false
	for _, r := range g.Rules {
		if r.ID == c.Rule {
			found = true
			continue
		}
		row.Rules = append(row.Rules, r)
	}
	if !found {
		return nil, consensus.Errorf(consensus.CodeNotFound, "security group %s has no rule %q", g.Name, c.Rule)
	}
	if row.Rules == nil {
		row.Rules = []Rule{}
	}
	row.Version = tx.Index
	return &row, tx.Insert(tSecGroups, &row)
}

func applyUpdatePort(tx *consensus.Tx, c *UpdatePortCmd) (any, error) {
	cur := GetPort(tx.Txn, c.Port)
	if cur == nil || cur.Project != c.Project {
		return nil, consensus.Errorf(consensus.CodeNotFound, "port %q not found", c.Port)
	}
	nw := GetNetwork(tx.Txn, cur.NetworkID)
	if nw == nil || !nw.IsOverlay() {
		return nil, consensus.Errorf(consensus.CodeInvalid, "port %s is on the cluster's network: security groups and address pairs are for project networks' ports", c.Port)
	}
	p := *cur
	if c.SecurityGroups != nil {
		groups, err := portGroups(tx, p.Project, *c.SecurityGroups, c.At)
		if err != nil {
			return nil, err
		}
		if len(groups) == 0 {
			return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: a port on a project network is in at least one security group", p.ID)
		}
		p.SecurityGroups = groups
	}
	if c.AddressPairs != nil {
		pairs, err := checkAddressPairs(p.ID, *nw, *c.AddressPairs, c.PairRules)
		if err != nil {
			return nil, err
		}
		p.AddressPairs = pairs
	}
	p.Version = tx.Index
	return &p, tx.Insert(tPorts, &p)
}

// portGroups checks a port's groups: its project's, at most
// maxGroupsPerPort, each once.
func portGroups(tx *consensus.Tx, project string, ids []string, at time.Time) ([]string, error) {
	if len(ids) > maxGroupsPerPort {
		return nil, consensus.Errorf(consensus.CodeInvalid, "a port is in at most %d security groups, not %d", maxGroupsPerPort, len(ids))
	}
	out := []string{}
	for _, id := range ids {
		if containsString(out, id) {
			return nil, consensus.Errorf(consensus.CodeInvalid, "security group %s is named twice", id)
		}
		if _, err := groupFor(tx, project, id, at); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, nil
}

func checkAddressPairs(port string, nw Network, pairs []AddressPair, rules int) ([]AddressPair, error) {
	if len(pairs) > maxAddressPairs {
		return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: at most %d allowed address pairs", port, maxAddressPairs)
	}
	out := []AddressPair{}
	for _, ap := range pairs {
		a, err := netip.ParseAddr(ap.IP)
		p6, has6 := nw.Prefix6()
		switch {
		case err == nil && a.Is4() && nw.Prefix().Contains(a):
		case rules < PairRulesV6:
			return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: allowed address %q is not one IPv4 address in %s", port, ap.IP, nw.CIDR)
		case err == nil && has6 && p6.Contains(a): // a zone never matches
		case has6:
			return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: allowed address %q is not one address in %s or %s", port, ap.IP, nw.CIDR, nw.CIDR6)
		default:
			return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: allowed address %q is not one IPv4 address in %s (the network has no IPv6 subnet)", port, ap.IP, nw.CIDR)
		}
		// Nor does a guest speak as its network's gateway, Cairn's or the
		// site's router.
		if gw6, _ := nw.Gateway6(); rules >= PairRulesV6 && (a == nw.GatewayAddr() || a == gw6) {
			return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: allowed address %s is the network's gateway", port, a)
		}
		mac := ""
		if ap.MAC != "" {
			m, err := parseUnicastMAC(ap.MAC)
			if err != nil {
				return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: allowed address pair MAC %q is not a unicast Ethernet MAC", port, ap.MAC)
			}
			mac = m.String()
		}
		p := AddressPair{IP: a.String(), MAC: mac}
		for _, o := range out {
			if o == p {
				return nil, consensus.Errorf(consensus.CodeInvalid, "port %s: allowed address pair %s %s is named twice", port, p.IP, p.MAC)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// Protocols by name, as Neutron spells them.
var protocolNumbers = map[string]int{"icmp": 1, "tcp": 6, "udp": 17, "dccp": 33, "gre": 47, "esp": 50, "ah": 51,
	"icmpv6": 58, "ipv6-icmp": 58, "vrrp": 112, "sctp": 132, "udplite": 136}

// protocolNumber returns a rule's protocol number, -1 for any.
func protocolNumber(s string) (int, error) {
	s = strings.ToLower(s)
	if s == "" || s == "any" {
		return -1, nil
	}
	if n, ok := protocolNumbers[s]; ok {
		return n, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("protocol %q is not a protocol name (tcp, udp, icmp, icmpv6, sctp, ...) or a number 0-255", s)
	}
	return n, nil
}

// hasPorts reports whether a protocol's header starts with the two ports.
func hasPorts(proto int) bool {
	return proto == 6 || proto == 17 || proto == 33 || proto == 132 || proto == 136
}

func isICMP(proto int) bool { return proto == 1 || proto == 58 }

// checkRules validates rules for g and returns g's rules with them added.
func checkRules(tx *consensus.Tx, g *SecurityGroup, rules []Rule) ([]Rule, error) {
	out := append([]Rule{}, g.Rules...)
	if len(out)+len(rules) > maxRulesPerGroup {
		return nil, consensus.Errorf(consensus.CodeInvalid, "a security group has at most %d rules; %s would have %d", maxRulesPerGroup, g.Name, len(out)+len(rules))
	}
	ids := map[string]bool{}
	for _, r := range out {
		ids[r.ID] = true
	}
	for _, r := range rules {
		if !ruleIDRE.MatchString(r.ID) || !strings.HasPrefix(r.ID, g.ID+"-") {
			return nil, consensus.Errorf(consensus.CodeInvalid, "rule id %q is not of the form %s-<suffix>", r.ID, g.ID)
		}
		if ids[r.ID] {
			return nil, consensus.Errorf(consensus.CodeAlreadyExists, "rule %s already exists", r.ID)
		}
		n, err := normalizeRule(r)
		if err != nil {
			return nil, consensus.Errorf(consensus.CodeInvalid, "security group %s: %v", g.Name, err) // said in the reader's words: err is coded
		}
		if n.RemoteGroup != "" && n.RemoteGroup != g.ID {
			if o := GetSecurityGroup(tx.Txn, n.RemoteGroup); (o == nil || o.Project != g.Project) && n.RemoteGroup != DefaultGroupID(g.Project) {
				return nil, consensus.Errorf(consensus.CodeNotFound, "security group %s: remote group %q not found", g.Name, n.RemoteGroup)
			}
		}
		for _, o := range out {
			if sameRule(o, n) {
				return nil, consensus.Errorf(consensus.CodeAlreadyExists, "security group %s already has this rule (%s)", g.Name, o.ID)
			}
		}
		ids[n.ID] = true
		out = append(out, n)
	}
	// What the rules cost on every port of the group, a remote group
	// counted as one address: a group whose ranges cut each other into
	// more pieces than a node will load is refused here, not on the nodes.
	one := map[string][]netip.Addr{}
	for _, r := range out {
		one[r.RemoteGroup] = []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}
	}
	if n := NewPortFilter(Port{}, &Network{}, []SecurityGroup{{Rules: out}}, one).Elements(); n > maxGroupElements {
		return nil, consensus.Errorf(consensus.CodeInvalid, "security group %s: its rules would take %d filter entries on each port, more than %d: use fewer overlapping port ranges or addresses", g.Name, n, maxGroupElements)
	}
	return out, nil
}

// normalizeRule checks a rule and spells it one way.
func normalizeRule(r Rule) (Rule, error) {
	switch strings.ToLower(r.Direction) {
	case "ingress", "egress":
		r.Direction = strings.ToLower(r.Direction)
	default:
		return r, consensus.Errorf(consensus.CodeInvalid, "direction %q: use ingress or egress", r.Direction)
	}
	switch strings.ToLower(r.EtherType) {
	case "ipv4", "":
		r.EtherType = "IPv4"
	case "ipv6":
		r.EtherType = "IPv6"
	default:
		return r, consensus.Errorf(consensus.CodeInvalid, "ethertype %q: use IPv4 or IPv6", r.EtherType)
	}
	v6 := r.EtherType == "IPv6"
	proto, err := protocolNumber(r.Protocol)
	if err != nil {
		return r, err
	}
	r.Protocol = ""
	if proto >= 0 {
		r.Protocol = strconv.Itoa(proto)
		for name, n := range protocolNumbers {
			if n == proto && name != "ipv6-icmp" {
				r.Protocol = name
			}
		}
	}
	if proto == 1 && v6 {
		return r, consensus.Errorf(consensus.CodeInvalid, "protocol icmp is IPv4's: use icmpv6 for an IPv6 rule")
	}
	if proto == 58 && !v6 {
		return r, consensus.Errorf(consensus.CodeInvalid, "protocol icmpv6 is IPv6's: use icmp for an IPv4 rule")
	}
	if r.PortMin != 0 || r.PortMax != 0 {
		if !hasPorts(proto) {
			return r, consensus.Errorf(consensus.CodeInvalid, "a port range needs a protocol with ports (tcp, udp, sctp, udplite, dccp), not %q", r.Protocol)
		}
		if r.PortMax == 0 {
			r.PortMax = r.PortMin
		}
		if r.PortMin < 1 || r.PortMax > 65535 || r.PortMin > r.PortMax {
			return r, consensus.Errorf(consensus.CodeInvalid, "port range %d-%d is invalid: ports are 1-65535, the first no greater than the last", r.PortMin, r.PortMax)
		}
	}
	if r.ICMPType != nil || r.ICMPCode != nil {
		if !isICMP(proto) {
			return r, consensus.Errorf(consensus.CodeInvalid, "an ICMP type or code needs protocol icmp or icmpv6")
		}
		if r.ICMPType == nil {
			return r, consensus.Errorf(consensus.CodeInvalid, "an ICMP code needs an ICMP type")
		}
		if *r.ICMPType < 0 || *r.ICMPType > 255 || (r.ICMPCode != nil && (*r.ICMPCode < 0 || *r.ICMPCode > 255)) {
			return r, consensus.Errorf(consensus.CodeInvalid, "ICMP type and code are 0-255")
		}
		t := *r.ICMPType
		r.ICMPType = &t
		if r.ICMPCode != nil {
			c := *r.ICMPCode
			r.ICMPCode = &c
		}
	}
	if r.RemoteCIDR != "" && r.RemoteGroup != "" {
		return r, consensus.Errorf(consensus.CodeInvalid, "a rule has a remote CIDR or a remote group, not both")
	}
	if r.RemoteCIDR != "" {
		p, err := netip.ParsePrefix(r.RemoteCIDR)
		if err != nil {
			if a, aerr := netip.ParseAddr(r.RemoteCIDR); aerr == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				return r, consensus.Errorf(consensus.CodeInvalid, "remote CIDR %q: %v", r.RemoteCIDR, err)
			}
		}
		if p.Addr().Is4() == v6 || p.Addr().Is4In6() {
			return r, consensus.Errorf(consensus.CodeInvalid, "remote CIDR %s is not an %s prefix", p, r.EtherType)
		}
		if p != p.Masked() {
			return r, consensus.Errorf(consensus.CodeInvalid, "remote CIDR %s has host bits set; did you mean %s?", p, p.Masked())
		}
		r.RemoteCIDR = p.String()
	}
	if len(r.Description) > 255 {
		return r, consensus.Errorf(consensus.CodeInvalid, "rule description: at most 255 characters")
	}
	return r, nil
}

func sameRule(a, b Rule) bool {
	eq := func(x, y *int) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.Direction == b.Direction && a.EtherType == b.EtherType && a.Protocol == b.Protocol &&
		a.PortMin == b.PortMin && a.PortMax == b.PortMax && eq(a.ICMPType, b.ICMPType) && eq(a.ICMPCode, b.ICMPCode) &&
		a.RemoteCIDR == b.RemoteCIDR && a.RemoteGroup == b.RemoteGroup
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// EffectiveGroups returns the groups a port is filtered by: its own, or
// its project's default group for a port recorded before groups existed.
// Ports on the cluster's network have none.
func (p Port) EffectiveGroups(nw *Network) []string {
	if nw == nil || !nw.IsOverlay() {
		return nil
	}
	if len(p.SecurityGroups) == 0 {
		return []string{DefaultGroupID(p.Project)}
	}
	return p.SecurityGroups
}
