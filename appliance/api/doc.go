// Package api serves Cairn's HTTPS JSON API under /api/v1/. Every route is
// declared once in the route table (routes.go), which both registers it and
// documents it in the OpenAPI 3 document at /api/v1/openapi.json. Errors are
// JSON {"code", "message"} with the matching HTTP status (errors.go). Handlers
// are thin: decode, call the identity service, encode. Only appliance/agent
// imports api.
package api
