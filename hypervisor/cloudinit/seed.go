package cloudinit

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"
)

// MaxUserData is the largest user-data a seed accepts: OpenStack's limit
// (64 KiB), so a VM's user-data moves between clouds unchanged.
const MaxUserData = 64 << 10

// MaxNetworkConfig bounds network-config; real ones are a few hundred bytes.
const MaxNetworkConfig = 64 << 10

// Seed is what a VM learns from its NoCloud seed at first boot.
type Seed struct {
	// InstanceID identifies this instance of the VM: cloud-init reruns its
	// once-per-instance steps (keys, users) when it changes.
	InstanceID string
	// Hostname is the VM's host name (meta-data local-hostname).
	Hostname string
	// SSHKeys are OpenSSH public keys, one per entry, in authorized_keys form.
	SSHKeys []string
	// UserData is the user-data document as given; empty means a
	// #cloud-config that only installs SSHKeys.
	UserData []byte
	// NetworkConfig is a cloud-init network-config (v1 or v2) in YAML, or
	// empty for cloud-init's default (DHCP on the first interface).
	NetworkConfig []byte
}

// Validate reports everything wrong with s, one error per problem.
func (s Seed) Validate() error {
	var errs []error
	if s.InstanceID == "" {
		errs = append(errs, errors.New("instance-id: empty"))
	} else if strings.ContainsFunc(s.InstanceID, isControl) {
		errs = append(errs, fmt.Errorf("instance-id %q: control characters", s.InstanceID))
	}
	if err := validHostname(s.Hostname); err != nil {
		errs = append(errs, err)
	}
	for i, k := range s.SSHKeys {
		if err := validSSHKey(k); err != nil {
			errs = append(errs, fmt.Errorf("ssh key %d: %w", i+1, err))
		}
	}
	if err := validUserData(s.UserData); err != nil {
		errs = append(errs, fmt.Errorf("user-data: %w", err))
	}
	if err := validNetworkConfig(s.NetworkConfig); err != nil {
		errs = append(errs, fmt.Errorf("network-config: %w", err))
	}
	return errors.Join(errs...)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// validHostname accepts an RFC 1123 host name: dot-separated labels of 1-63
// letters, digits and hyphens, not starting or ending with a hyphen, at most
// 253 characters in all.
func validHostname(h string) error {
	if h == "" {
		return errors.New("hostname: empty")
	}
	if len(h) > 253 {
		return fmt.Errorf("hostname: %d characters, more than 253", len(h))
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("hostname %q: each dot-separated part must be 1 to 63 characters", h)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("hostname %q: a part may not start or end with a hyphen", h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("hostname %q: only letters, digits, hyphens and dots are allowed", h)
			}
		}
	}
	return nil
}

// validSSHKey accepts one authorized_keys line (options and comment allowed).
func validSSHKey(k string) error {
	if strings.ContainsAny(strings.TrimRight(k, "\r\n"), "\r\n") {
		return errors.New("more than one line")
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
		return fmt.Errorf("not an OpenSSH public key: %w", err)
	}
	return nil
}

// validUserData accepts what cloud-init acts on: a #cloud-config YAML
// mapping, a script, a MIME multi-part document, an include list or a boot
// hook. Anything else cloud-init would silently ignore, which is worse than
// an error now.
func validUserData(d []byte) error {
	if len(d) == 0 {
		return nil
	}
	if len(d) > MaxUserData {
		return fmt.Errorf("%d bytes, more than the %d-byte limit", len(d), MaxUserData)
	}
	first, _, _ := bytes.Cut(d, []byte("\n"))
	first = bytes.TrimRight(first, "\r \t")
	switch {
	case string(first) == "#cloud-config":
		var doc any
		if err := yaml.Unmarshal(d, &doc); err != nil {
			return fmt.Errorf("#cloud-config is not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		if _, ok := doc.(map[string]any); !ok && doc != nil {
			return fmt.Errorf("#cloud-config is not a YAML mapping (it is a %T)", doc)
		}
		return nil
	case bytes.HasPrefix(d, []byte("#!")),
		hasPrefixFold(d, "Content-Type: multipart/"),
		bytes.HasPrefix(d, []byte("#include")),
		bytes.HasPrefix(d, []byte("#cloud-boothook")):
		return nil
	}
	return fmt.Errorf("not a cloud-init document: it starts with %q; expected #cloud-config, #!, #include, #cloud-boothook or Content-Type: multipart/", truncate(first, 40))
}

// validNetworkConfig accepts a YAML mapping (network config v1 or v2).
func validNetworkConfig(d []byte) error {
	if len(d) == 0 {
		return nil
	}
	if len(d) > MaxNetworkConfig {
		return fmt.Errorf("%d bytes, more than the %d-byte limit", len(d), MaxNetworkConfig)
	}
	var doc any
	if err := yaml.Unmarshal(d, &doc); err != nil {
		return fmt.Errorf("not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if _, ok := doc.(map[string]any); !ok {
		return fmt.Errorf("not a YAML mapping (it is a %T)", doc)
	}
	return nil
}

func hasPrefixFold(d []byte, prefix string) bool {
	return len(d) >= len(prefix) && strings.EqualFold(string(d[:len(prefix)]), prefix)
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
