// Package ui owns Cairn's web interface for the staff who run an appliance
// in a hospital branch: first-run setup, login, the cluster dashboard,
// projects with their members and quotas, users, flavors, the audit log,
// the storage pool's disks and health, and buckets with a folder view for
// browsing, uploading and downloading objects, virtual machines (list,
// create form, a page per VM with its power buttons and history, the
// graphical console through noVNC and a text serial console), the images
// they start from and the block volumes they use (list, create, attach,
// detach, grow, delete, with each volume's copies described in plain
// words), in English and Simplified Chinese.
//
// Pages are a-h/templ components (the generated *_templ.go files are
// committed; templ_test.go fails when they are stale) with htmx, vendored
// under static/, for partial updates. Every form also works as a plain HTML
// POST followed by a redirect; only uploads need script (static/upload.js),
// which sends the file as the raw request body so it streams into the object
// store, and so do the consoles (static/console.js with the vendored noVNC
// ES modules under static/novnc/, and static/serial.js), which open
// WebSockets to the API with a ticket minted when the page is rendered.
//
// The package talks only to the identity, storage, compute and volume service layers (and the
// cluster status, join token and repair figures the agent passes in), never
// to the state store, so the UI authorizes, validates and audits exactly as
// the HTTP API does.
// Only the appliance wiring imports ui; New returns the handler it mounts at "/".
package ui
