package netfabric

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// SecurityGroupCreate asks for a security group.
type SecurityGroupCreate struct {
	Name        string `json:"name"`
	Project     string `json:"project,omitempty"` // name or ID; default: the caller's only project
	Description string `json:"description,omitempty"`
	// Rules to start with; a new group has none (it lets nothing in and
	// nothing out, beyond what the port's other groups allow).
	Rules []Rule `json:"rules,omitempty"`
}

// PortUpdate changes a project network port's security groups (names or
// IDs) or its allowed address pairs; an absent field is left as it is.
type PortUpdate struct {
	SecurityGroups *[]string      `json:"security_groups,omitempty"`
	AddressPairs   *[]AddressPair `json:"allowed_address_pairs,omitempty"`
}

// ListSecurityGroups returns the groups of the caller's projects (or of
// one), their default groups included.
func (s *Service) ListSecurityGroups(p *identity.Principal, project string) ([]SecurityGroup, error) {
	var ids []string
	if project != "" {
		pr, err := s.id.GetProject(p, project)
		if err != nil {
			return nil, err
		}
		if !p.Can(pr.ID, identity.RoleReader) {
			return nil, notFound("project", project)
		}
		ids = []string{pr.ID}
	} else {
		ids = p.ProjectIDs()
		sort.Strings(ids)
	}
	out := []SecurityGroup{}
	txn := s.c.Store().ReadTxn()
	for _, id := range ids {
		out = append(out, SecurityGroupsOf(txn, id)...)
	}
	return out, nil
}

// GetSecurityGroup returns a group of the caller's projects by ID or name.
func (s *Service) GetSecurityGroup(ctx context.Context, p *identity.Principal, ref string) (*SecurityGroup, error) {
	g, err := s.group(p, ref)
	if consensus.ErrorCode(err) != consensus.CodeNotFound {
		return g, err
	}
	if err := s.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	return s.group(p, ref)
}

func (s *Service) group(p *identity.Principal, ref string) (*SecurityGroup, error) {
	txn := s.c.Store().ReadTxn()
	if g := GetSecurityGroup(txn, ref); g != nil && p.Can(g.Project, identity.RoleReader) {
		return g, nil
	}
	var found []SecurityGroup
	projects := p.ProjectIDs()
	if p.IsClusterAdmin() {
		// Every project with a group of its own made, too.
		if it, err := txn.Get(tSecGroups, "id"); err == nil {
			for obj := it.Next(); obj != nil; obj = it.Next() {
				if g := obj.(*SecurityGroup); !containsString(projects, g.Project) {
					projects = append(projects, g.Project)
				}
			}
		}
	}
	for _, pid := range projects {
		if !p.Can(pid, identity.RoleReader) {
			continue
		}
		for _, g := range SecurityGroupsOf(txn, pid) {
			if g.ID == ref {
				return &g, nil
			}
			if g.Name == ref {
				found = append(found, g)
			}
		}
	}
	switch len(found) {
	case 0:
		return nil, notFound("security group", ref)
	case 1:
		return &found[0], nil
	}
	return nil, invalid("%d security groups are named %q in your projects: use the group's ID", len(found), ref)
}

// GroupIDs resolves a VM's or port's security groups (names or IDs) in a
// project: none gives the project's default group.
func GroupIDs(txn *memdb.Txn, project string, refs []string) ([]string, error) {
	if len(refs) == 0 {
		return []string{DefaultGroupID(project)}, nil
	}
	groups := SecurityGroupsOf(txn, project)
	out := []string{}
	for _, ref := range refs {
		id := ""
		for _, g := range groups {
			if g.ID == ref || g.Name == ref {
				id = g.ID
			}
		}
		if id == "" {
			return nil, notFound("security group", ref)
		}
		if containsString(out, id) {
			return nil, invalid("security group %s is named twice", ref)
		}
		out = append(out, id)
	}
	if len(out) > maxGroupsPerPort {
		return nil, invalid("a port is in at most %d security groups, not %d", maxGroupsPerPort, len(out))
	}
	return out, nil
}

// CreateSecurityGroup creates a group in a project.
func (s *Service) CreateSecurityGroup(ctx context.Context, p *identity.Principal, req SecurityGroupCreate) (*SecurityGroup, error) {
	const action = "security_group.create"
	pr, err := s.project(p, req.Project)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, req.Name, "", err)
	}
	if !p.Can(pr.ID, identity.RoleMember) {
		return nil, s.id.Deny(ctx, p, action, req.Name, pr.ID, consensus.Errorf(consensus.CodeForbidden, "not allowed to create security groups in project %s", pr.Name))
	}
	g := SecurityGroup{ID: newGroupID(), Name: req.Name, Project: pr.ID, Description: req.Description, CreatedAt: time.Now().UTC()}
	rules, err := s.resolveRules(pr.ID, g.ID, req.Rules, map[string]string{req.Name: g.ID})
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, req.Name, pr.ID, err)
	}
	g.Rules = rules
	var out SecurityGroup
	if err := s.id.Mutate(ctx, p, action, req.Name, pr.ID, MsgCreateSecurityGroup, g, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// resolveRules gives rules their IDs and their remote groups' IDs (a name
// is looked up in the project; extra names first, for a group's own).
func (s *Service) resolveRules(project, groupID string, rules []Rule, extra map[string]string) ([]Rule, error) {
	txn := s.c.Store().ReadTxn()
	out := make([]Rule, 0, len(rules))
	for _, r := range rules {
		r.ID = groupID + "-" + randomHex(5)
		if r.RemoteGroup != "" {
			id, ok := extra[r.RemoteGroup]
			if !ok {
				ids, err := GroupIDs(txn, project, []string{r.RemoteGroup})
				if err != nil {
					return nil, err
				}
				id = ids[0]
			}
			r.RemoteGroup = id
		}
		if _, err := normalizeRule(r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// writable returns a group the caller may change.
func (s *Service) writable(ctx context.Context, p *identity.Principal, action, ref string) (*SecurityGroup, error) {
	g, err := s.GetSecurityGroup(ctx, p, ref)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, ref, "", err)
	}
	if !p.Can(g.Project, identity.RoleMember) {
		return nil, s.id.Deny(ctx, p, action, g.Name, g.Project, consensus.Errorf(consensus.CodeForbidden, "not allowed to change security group %s", g.Name))
	}
	return g, nil
}

// DeleteSecurityGroup deletes a group no port and no other group's rule uses.
func (s *Service) DeleteSecurityGroup(ctx context.Context, p *identity.Principal, ref string) (*SecurityGroup, error) {
	const action = "security_group.delete"
	g, err := s.writable(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	if err := s.id.Mutate(ctx, p, action, g.Name, g.Project, MsgDeleteSecurityGroup, DeleteSecurityGroupCmd{ID: g.ID, Project: g.Project}, nil); err != nil {
		return nil, err
	}
	return g, nil
}

// AddRule adds a rule to a group; running VMs' ports follow within a second.
func (s *Service) AddRule(ctx context.Context, p *identity.Principal, ref string, r Rule) (*SecurityGroup, error) {
	const action = "security_group.rule_add"
	g, err := s.writable(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	rules, err := s.resolveRules(g.Project, g.ID, []Rule{r}, map[string]string{g.Name: g.ID})
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, g.Name, g.Project, err)
	}
	var out SecurityGroup
	if err := s.id.Mutate(ctx, p, action, g.Name, g.Project, MsgAddSecurityGroupRules,
		AddRulesCmd{Group: g.ID, Project: g.Project, Rules: rules, At: time.Now().UTC()}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteRule deletes one rule of a group.
func (s *Service) DeleteRule(ctx context.Context, p *identity.Principal, ref, rule string) (*SecurityGroup, error) {
	const action = "security_group.rule_delete"
	g, err := s.writable(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	var out SecurityGroup
	if err := s.id.Mutate(ctx, p, action, g.Name, g.Project, MsgDeleteSecurityGroupRule,
		DeleteRuleCmd{Group: g.ID, Project: g.Project, Rule: rule, At: time.Now().UTC()}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetPort returns a port the caller can see.
func (s *Service) GetPort(ctx context.Context, p *identity.Principal, id string) (*Port, error) {
	get := func() *Port {
		port := GetPort(s.c.Store().ReadTxn(), id)
		if port == nil || port.Project == "" || !p.Can(port.Project, identity.RoleReader) {
			return nil
		}
		return port
	}
	if port := get(); port != nil {
		return port, nil
	}
	if err := s.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	if port := get(); port != nil {
		return port, nil
	}
	return nil, notFound("port", id)
}

// UpdatePort changes a project network port's security groups or allowed
// address pairs, on a running VM too.
func (s *Service) UpdatePort(ctx context.Context, p *identity.Principal, id string, req PortUpdate) (*Port, error) {
	const action = "port.update"
	port, err := s.GetPort(ctx, p, id)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, id, "", err)
	}
	if !p.Can(port.Project, identity.RoleMember) {
		return nil, s.id.Deny(ctx, p, action, id, port.Project, consensus.Errorf(consensus.CodeForbidden, "not allowed to change port %s", id))
	}
	// On a VLAN network an address pair speaks on the site's own network:
	// the cluster admin's call, as the network itself is.
	if req.AddressPairs != nil && !p.IsClusterAdmin() {
		if nw := GetNetwork(s.c.Store().ReadTxn(), port.NetworkID); nw != nil && nw.IsVLAN() {
			return nil, s.id.Deny(ctx, p, action, id, port.Project, consensus.Errorf(consensus.CodeForbidden,
				"only a cluster admin gives allowed address pairs on a VLAN network: they speak on the site's network"))
		}
	}
	cmd := UpdatePortCmd{Port: port.ID, Project: port.Project, AddressPairs: req.AddressPairs, PairRules: PairRulesV6, At: time.Now().UTC()}
	if req.SecurityGroups != nil {
		if len(*req.SecurityGroups) == 0 {
			return nil, s.id.Deny(ctx, p, action, id, port.Project, invalid("a port on a project network is in at least one security group"))
		}
		ids, err := GroupIDs(s.c.Store().ReadTxn(), port.Project, *req.SecurityGroups)
		if err != nil {
			return nil, s.id.Deny(ctx, p, action, id, port.Project, err)
		}
		cmd.SecurityGroups = &ids
	}
	var out Port
	if err := s.id.Mutate(ctx, p, action, id, port.Project, MsgUpdatePort, cmd, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func newGroupID() string { return "sg-" + randomHex(8) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
