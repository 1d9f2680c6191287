// Package netfabric will own bridges, VLANs, VXLAN overlays, IPAM, DHCP and
// IPv6 router advertisements, security groups and floating IPs (nftables, in a
// table of its own), and the management virtual IP. Its commands use message
// types 384-511. Nothing is implemented yet.
package netfabric
