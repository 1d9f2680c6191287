package consensus

import (
	jsonv1 "github.com/go-json-experiment/json/v1"
)

// Commands and their results are JSON. They are encoded and decoded with
// go-json-experiment's encoding/json-compatible codec: a command is encoded
// once by its writer, wrapped (the audited envelope) and decoded again by
// every node, and with kilobytes in a command (small objects ride in their
// PUTs) encoding/json's extra passes over the bytes were most of what a
// write cost.

// Marshal encodes a command (or a part of one) as the log stores it.
func Marshal(v any) ([]byte, error) { return jsonv1.Marshal(v) }

// unmarshal decodes a command or a result.
func unmarshal(b []byte, v any) error { return jsonv1.Unmarshal(b, v) }
