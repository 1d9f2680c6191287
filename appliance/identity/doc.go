// Package identity owns who may do what in Cairn: users (argon2id password
// hashes), projects, per-project roles (admin, member, reader) plus the
// cluster admin, session and API tokens (stored hashed), flavors, per-project
// quotas enforced inside the FSM, and the audit log.
//
// Its tables and numbered commands are registered with consensus by Register.
// Service is the layer both the HTTP API and the UI call: it authorizes,
// validates, turns requests into typed commands and records every mutation in
// the audit log. Other domains charge quotas with Charge inside their own
// command handlers. Only appliance packages and ui import identity.
package identity
