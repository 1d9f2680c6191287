package hypervisor

import (
	"errors"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// Desired power states of a VM, set by its owner through the API.
const (
	DesiredRunning = "running"
	DesiredStopped = "stopped"
	DesiredPaused  = "paused"
	DesiredDeleted = "deleted" // the node tears it down, then purges the record
)

// Observed states, reported by the node that runs the VM (or set by the
// scheduler before it has one).
const (
	StateScheduling = "scheduling" // waiting for the scheduler
	StateBuilding   = "building"   // placed: the node is preparing disks and network
	StateRunning    = "running"
	StatePaused     = "paused"
	StateStopping   = "stopping"
	StateStopped    = "stopped"
	StateDeleting   = "deleting"
	StateError      = "error" // Status.Error says why
)

// Stop modes.
const (
	StopACPI  = "acpi"  // press the power button, force after the node's timeout
	StopForce = "force" // pull the plug
)

// DataDisk is an extra blank disk of a VM.
type DataDisk struct {
	SizeGiB int64 `json:"size_gib"`
}

// VMSpec is what the owner asked for. Sizes are copied from the flavor at
// create or resize time, so deleting a flavor never changes a running VM.
type VMSpec struct {
	Flavor    string     `json:"flavor"` // flavor ID
	VCPUs     int64      `json:"vcpus"`
	RAMMiB    int64      `json:"ram_mib"`
	DiskGiB   int64      `json:"disk_gib"` // the boot disk
	Image     string     `json:"image"`    // image ID
	DataDisks []DataDisk `json:"data_disks,omitempty"`
	Hostname  string     `json:"hostname"`
	SSHKeys   []string   `json:"ssh_keys,omitempty"`
	UserData  string     `json:"user_data,omitempty"`
	Group     string     `json:"group,omitempty"` // anti-affinity: never two VMs of a group on one node
	Firmware  string     `json:"firmware"`        // bios or uefi
	// BootVolume is the block volume the VM boots from (its ID); "": a
	// local boot disk of DiskGiB on the VM's node.
	BootVolume string `json:"boot_volume,omitempty"`
	// VarsVolume is the volume holding a UEFI VM's variable store (boot
	// entries, Secure Boot keys), so that they move with it; "": the
	// store is a file on its node, and the VM cannot leave it (VMs made
	// before protocol 4, and UEFI VMs with a local boot disk).
	VarsVolume string `json:"vars_volume,omitempty"`
	// VarsFrom is the node whose file of the VM's UEFI variables its
	// VarsVolume is still to take over (a VM converted after it ran): it
	// starts there once, and cannot leave it before.
	VarsFrom string `json:"vars_from,omitempty"`
	// HAOff: not restarted on another node when its node dies (ha.go);
	// HAPriority orders the restarts, highest first.
	HAOff      bool `json:"ha_off,omitempty"`
	HAPriority int  `json:"ha_priority,omitempty"`
	// HAOnAt is the Raft index at which HA was last switched on (0: on
	// from the start): a lost node that had not seen it then may not have
	// killed the VM (applyFailoverVM).
	HAOnAt uint64 `json:"ha_on_at,omitempty"`
}

// DiskGiBTotal is what the VM's local disks count against the disk quota
// (a boot volume counts against the volume quota).
func (s VMSpec) DiskGiBTotal() int64 {
	n := s.DiskGiB
	if s.BootVolume != "" {
		n = 0
	}
	for _, d := range s.DataDisks {
		n += d.SizeGiB
	}
	return n
}

// NIC is a VM's network port; the address comes from the network's IPAM and
// is handed out by the node's DHCP server.
type NIC struct {
	ID      string `json:"id"`
	Network string `json:"network"`
	MAC     string `json:"mac"`
	IP      string `json:"ip"`
	IP6     string `json:"ip6,omitempty"` // its port's, when its network has an IPv6 subnet (filled in when read)
	MTU     int    `json:"mtu,omitempty"` // a project network's; 0 on the cluster's (1500)
	// SecurityGroups filter a project network's NIC (group IDs).
	SecurityGroups []string `json:"security_groups,omitempty"`
}

// VMStatus is what the node observed.
type VMStatus struct {
	State     string    `json:"state"`
	Error     string    `json:"error,omitempty"`
	Accel     string    `json:"accel,omitempty"` // kvm or tcg
	PID       int       `json:"pid,omitempty"`
	VCPUs     int64     `json:"vcpus,omitempty"`   // what the running QEMU has now
	RAMMiB    int64     `json:"ram_mib,omitempty"` // likewise
	Pending   string    `json:"pending,omitempty"` // a change that waits for the next stop/start
	StartedAt time.Time `json:"started_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// ErrorSaid and PendingSaid are Error and Pending as made from a
	// format (consensus.Errorf's Format, Args and Inner), for pages in
	// another language; nil when free text (QEMU's own words).
	ErrorSaid   *consensus.Error `json:"error_said,omitempty"`
	PendingSaid *consensus.Error `json:"pending_said,omitempty"`
}

// failed marks st as an error, said as err says it.
func (st *VMStatus) failed(err error) {
	st.State, st.Error, st.ErrorSaid = StateError, err.Error(), said(err)
}

// waiting says what st waits for before it can start.
func (st *VMStatus) waiting(err error) {
	w := consensus.Errorf("", "waiting: %v", err)
	st.Pending, st.PendingSaid = w.Error(), said(w)
}

// saidOr is text as made from a format (s), when s says the same; else
// text itself: an event's parameter.
func saidOr(s *consensus.Error, text string) any {
	if s != nil && s.Message == text {
		return s
	}
	return text
}

// said is err as made from a format, if it was and nothing wrapped it in
// other words; nil otherwise.
func said(err error) *consensus.Error {
	var e *consensus.Error
	if errors.As(err, &e) && e != nil && e.Message == err.Error() && (e.Format != "" || e.Key != "") {
		return e
	}
	return nil
}

// VM is one virtual machine: desired state from its owner, placement from
// the scheduler, observed status from its node.
type VM struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	ProjectID string   `json:"project_id"`
	UserID    string   `json:"user_id"` // who created it
	Spec      VMSpec   `json:"spec"`
	Desired   string   `json:"desired"`
	StopMode  string   `json:"stop_mode,omitempty"`
	Reboots   uint64   `json:"reboots"` // bumped per reboot request; the node resets when it has done fewer
	Node      string   `json:"node,omitempty"`
	NICs      []NIC    `json:"nics"`
	Status    VMStatus `json:"status"`
	// Rebooted is how many reboot requests the node has carried out.
	Rebooted  uint64    `json:"rebooted"`
	CreatedAt time.Time `json:"created_at"`
	Version   uint64    `json:"version"` // changes with desired state, not with status reports
	// Migration is the live migration under way, if any (live.go).
	Migration *Migration `json:"migration,omitempty"`
	// CloudInitRedacted marks a copy shown to a project reader: Spec's SSH
	// keys and user-data were left out. Never set in the replicated state.
	CloudInitRedacted bool `json:"cloud_init_redacted,omitempty"`
	// HA says, when read, whether the VM restarts on another node if its
	// node dies: on, off, or unavailable and why. Never set in the
	// replicated state.
	HA string `json:"ha,omitempty"`
}

// IPs are the VM's addresses.
func (v *VM) IPs() []string {
	var out []string
	for _, n := range v.NICs {
		if n.IP != "" {
			out = append(out, n.IP)
		}
	}
	for _, n := range v.NICs {
		if n.IP6 != "" {
			out = append(out, n.IP6)
		}
	}
	return out
}

// Event is one line of a VM's history: what was asked and what happened.
type Event struct {
	ID      string    `json:"id"` // VM ID + zero-padded Raft index: sorts per VM by time
	VM      string    `json:"vm"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // e.g. create, stop, state
	Message string    `json:"message"`
	// Key and Args name Message and its parameters (events.go), for
	// pages in another language; none on events written before them.
	Key  string   `json:"key,omitempty"`
	Args []string `json:"args,omitempty"`
	// Inner holds, at a parameter's index, a reason made from a format
	// (consensus.Errorf's), said in the page's language too.
	Inner []*consensus.Error `json:"inner,omitempty"`
	User  string             `json:"user,omitempty"`
	Node  string             `json:"node,omitempty"`
}

// Host is a node's capacity for VMs, reported by the node itself.
type Host struct {
	Name    string `json:"name"`
	VCPUs   int64  `json:"vcpus"`
	RAMMiB  int64  `json:"ram_mib"`
	Accel   string `json:"accel"`
	DiskGiB int64  `json:"disk_gib,omitempty"` // VM disks' filesystem less the control plane's floor; 0: unchecked
	Version string `json:"qemu_version,omitempty"`
	// CPUModel is the host CPU's model name: a VM moves live under KVM
	// only between hosts whose CPUs are alike (it sees the host's CPU).
	CPUModel string `json:"cpu_model,omitempty"`
	Error    string `json:"error,omitempty"` // why this node cannot run VMs, if it cannot
	// ErrorSaid is Error as made from its format, for pages in another
	// language; nil when it was not.
	ErrorSaid  *consensus.Error `json:"error_said,omitempty"`
	ReportedAt time.Time        `json:"reported_at"`
}

// Settings are the cluster admin's compute knobs.
type Settings struct {
	CPUAllocationRatio float64 `json:"cpu_allocation_ratio"` // vCPUs per host CPU
	RAMAllocationRatio float64 `json:"ram_allocation_ratio"`
	ReservedRAMMiB     int64   `json:"reserved_ram_mib"` // per host, for the host itself
	// DiskAllocationRatio bounds the virtual size of a node's thin VM disks
	// by its disk capacity times this; 0 (settings saved before it
	// existed, or left out) means the default.
	DiskAllocationRatio float64 `json:"disk_allocation_ratio,omitempty"`
	// MigrationMiBps caps each live migration's stream (MiB/s), so that
	// moving VMs leaves the network to the others; 0: no cap.
	MigrationMiBps int64  `json:"migration_mib_per_s,omitempty"`
	Version        uint64 `json:"version"`
}

// DefaultSettings are OpenStack Nova's current defaults (cpu 4.0, ram 1.0,
// disk 1.0) with 1 GiB kept for the appliance itself. Disk stays at 1.0:
// thin disks that all fill up at once would pause guests with I/O errors
// (patient records half written), and the admin who knows the guests
// grow slowly can raise it.
var DefaultSettings = Settings{CPUAllocationRatio: 4, RAMAllocationRatio: 1, ReservedRAMMiB: 1024, DiskAllocationRatio: 1}

// DiskRatio is the disk overcommit ratio in force.
func (s Settings) DiskRatio() float64 {
	if s.DiskAllocationRatio <= 0 {
		return DefaultSettings.DiskAllocationRatio
	}
	return s.DiskAllocationRatio
}

// Image visibility.
const (
	VisibilityPrivate = "private" // its uploader (and cluster admins)
	VisibilityProject = "project" // every member of its project
	VisibilityPublic  = "public"  // every user
)

// Image formats.
const (
	FormatQCOW2 = "qcow2"
	FormatRaw   = "raw"
	FormatISO   = "iso"
)

// Image is a VM image whose bytes live in the object store.
type Image struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	ProjectID   string    `json:"project_id"`
	OwnerID     string    `json:"owner_id"`
	Visibility  string    `json:"visibility"`
	Format      string    `json:"format"`      // as uploaded: qcow2, raw or iso
	DiskFormat  string    `json:"disk_format"` // as stored: qcow2 (raw is converted) or iso
	Size        int64     `json:"size"`        // stored bytes
	VirtualSize int64     `json:"virtual_size"`
	SHA256      string    `json:"sha256"` // of the stored bytes
	MinDiskGiB  int64     `json:"min_disk_gib"`
	MinRAMMiB   int64     `json:"min_ram_mib"`
	OSType      string    `json:"os_type,omitempty"` // e.g. linux, windows
	OSVersion   string    `json:"os_version,omitempty"`
	Description string    `json:"description,omitempty"`
	Firmware    string    `json:"firmware"` // bios or uefi: how VMs from it boot
	Source      string    `json:"source,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	Version     uint64    `json:"version"`
}
