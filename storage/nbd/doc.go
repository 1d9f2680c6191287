// Package nbd is Cairn's Network Block Device server: the fixed newstyle
// handshake (with STARTTLS, GO/INFO, LIST, structured replies) and the
// transmission phase (READ, WRITE, FLUSH, FUA, TRIM, WRITE_ZEROES, DISC,
// and BLOCK_STATUS for the base:allocation metadata context),
// written against the NBD protocol document (NetworkBlockDevice/nbd,
// doc/proto.md).
//
// It owns the wire protocol and the ordering rules that keep data safe:
// requests are decoded one after another, run concurrently up to a bound,
// and answered in whatever order they finish; a FLUSH is started only after
// it was received, so it covers every write acknowledged before it.
// What an export stores is a Backend's business; FileBackend serves a raw
// file or local block device.
//
// It imports nothing of Cairn. Storage's volume layer (which implements
// Backend over the pool) and the agent (which listens for QEMU) may import it.
package nbd
