package hypervisor

import (
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/hashicorp/go-memdb"
)

// Who may see and do what with compute's records. Every check of a VM's
// or an image's access goes through one of these, so the rules live here
// and nowhere else.
//
//   - A VM is read by its project's readers; its cloud-init (SSH keys and
//     user-data, which often carries passwords and tokens) only by the
//     project's members and above, and cluster admins.
//   - A public image is seen by everyone, but only cluster admins create,
//     change or delete it (or make an image public).
//   - A project image is seen by the project's readers and changed by its
//     members.
//   - A private image is seen by its uploader while they are still in its
//     project: removal from the project ends it.
//   - A VM boots from a public image or from one of its own project's that
//     the caller can see; never from another project's image.

// canReadVM says whether the caller may see a VM: its project's readers.
func canReadVM(p *identity.Principal, vm *VM) bool {
	return p.Can(vm.ProjectID, identity.RoleReader)
}

// CanChangeVM says whether the caller may act on a VM (power, rename,
// resize, delete, console, serial log): its project's members.
func CanChangeVM(p *identity.Principal, vm *VM) bool {
	return p.Can(vm.ProjectID, identity.RoleMember)
}

// seesCloudInit says whether the caller may read a VM's cloud-init: whoever
// may change the VM (the serial log shows what cloud-init printed anyway).
func seesCloudInit(p *identity.Principal, vm *VM) bool { return CanChangeVM(p, vm) }

// viewVM is the VM as the caller may see it, with its NICs' IPv6 addresses: a copy without its SSH keys
// and user-data for a reader, marked so. The stored row is never changed.
func viewVM(txn *memdb.Txn, p *identity.Principal, vm *VM) *VM {
	v := *vm
	// A NIC's IPv6 address is its port's: its network may have got its
	// IPv6 subnet after the VM was made.
	v.NICs = append([]NIC(nil), vm.NICs...)
	for i, n := range v.NICs {
		if port := netfabric.GetPort(txn, n.ID); port != nil {
			v.NICs[i].IP6 = port.IP6
		}
	}
	on := *vm
	on.Spec.HAOff = false
	switch err := Protected(txn, &on); {
	case err != nil:
		v.HA = "unavailable: " + err.Error()
	case vm.Spec.HAOff:
		v.HA = "off"
	default:
		v.HA = "on"
	}
	if seesCloudInit(p, vm) {
		return &v
	}
	v.Spec.SSHKeys, v.Spec.UserData = nil, ""
	v.CloudInitRedacted = true
	return &v
}

// visible says whether the caller may see an image.
func visible(p *identity.Principal, img *Image) bool {
	switch {
	case p.IsClusterAdmin() || img.Visibility == VisibilityPublic:
		return true
	case img.Visibility == VisibilityProject:
		return p.Can(img.ProjectID, identity.RoleReader)
	}
	// Private: the uploader, as long as they are in the project now.
	return img.OwnerID == p.User.ID && p.Can(img.ProjectID, identity.RoleReader)
}

// bootableIn says whether a VM of project may boot from an image the
// caller names: a public image, or one of that project's the caller sees.
func bootableIn(p *identity.Principal, img *Image, project string) bool {
	return img.Visibility == VisibilityPublic || (img.ProjectID == project && visible(p, img))
}

// CanChangeImage says whether the caller may rename, re-share or delete an
// image. Public images are the cluster's: cluster admins only.
func CanChangeImage(p *identity.Principal, img *Image) bool {
	switch {
	case p.IsClusterAdmin():
		return true
	case img.Visibility == VisibilityPublic || !visible(p, img):
		return false
	case img.Visibility == VisibilityPrivate:
		return img.OwnerID == p.User.ID && p.Can(img.ProjectID, identity.RoleMember)
	}
	return p.Can(img.ProjectID, identity.RoleMember)
}

// mayPublish says whether the caller may make an image public.
func mayPublish(p *identity.Principal) bool { return p.IsClusterAdmin() }
