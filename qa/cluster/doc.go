// Package cluster holds Cairn's multi-node integration tests: real `cairn
// agent` processes started by qa/harness, each in its own network namespace,
// driven only through the public API and CLI. The tests live in _test.go
// files; this file exists so the package builds without them.
package cluster
