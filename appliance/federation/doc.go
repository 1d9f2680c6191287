// Package federation joins many sites (each a Cairn cluster) to one hub,
// central IT's own Cairn cluster, as Rancher and Sidero Omni have their
// sites dial out:
//
//   - Enrolment. A hub admin makes a one-time token (the hub keeps only
//     its hash); it carries the hash of the hub's federation CA, so a
//     site's admin needs nothing else: the site pins that CA on first
//     contact, makes its own key and has the hub sign it. The token is
//     consumed in the same replicated command that records the site with
//     its certificate's serial. The federation CA is its own, never the
//     hub's cluster CA (whose certificates pass the hub's Raft mTLS).
//   - Sessions. A site dials out to the hub (it needs no inbound port: a
//     site behind NAT works), TLS 1.3 with its client certificate and
//     ALPN cairn-fed/1, and runs yamux over it: the hub opens streams to
//     reach the site's API, the site opens streams to say hello (and to
//     learn the hub's CA set, so a rotation reaches it before use).
//     Dropped sessions are dialled again with full-jitter backoff.
//   - Leaving. Revoking a site drops its serials: its certificate stops
//     working at once and its session is closed. Enrolling again with a
//     new token always works, unlike Prism Central's blacklist.
package federation
