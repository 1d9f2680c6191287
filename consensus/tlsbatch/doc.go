// Package tlsbatch is crypto/tls with fewer system calls: the records of one
// large Write leave in one socket write instead of one each, and a read takes
// up to four records that have arrived instead of about one.
//
// crypto/tls cuts a Write into records of at most 16 KiB and writes each to
// the socket on its own, so a 256 KiB block of an object costs sixteen
// system calls, sixteen loopback deliveries and sixteen wake-ups of the
// reader. Where system calls are dear (virtual machines), that is most of
// what a GET costs the nodes. A Conn gathers the records of one Write in a
// pooled buffer and sends them together. Nothing is held back between
// Writes, so no protocol can stall on a buffered byte, and a Write returns
// once its bytes are on the socket, as with crypto/tls. Buffers are pooled
// and taken only while a Write or a batch of received bytes is in hand: an
// idle connection holds none.
//
// The cluster port (shards, RPC) and the S3 endpoint use it, server and
// client side; Raft's connections on the cluster port are handed on as the
// plain *tls.Conn, so its small messages go out as crypto/tls writes them.
// NewListener completes each handshake before Accept returns the connection,
// as net/http needs to fill in r.TLS for a connection that is not a
// *tls.Conn.
//
// Any package may import tlsbatch; it imports nothing of Cairn's.
package tlsbatch
