package consensus

import (
	"bytes"
	"testing"
)

// Command framing round-trips, and no byte string makes decoding panic.
func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte{0, 32, '{', '}'})
	f.Add([]byte{0x80, 0x01})
	f.Add([]byte{1})
	f.Add(append([]byte{0x40, 32}, joinAttached([]byte(`{"a":1}`), []byte("bytes"))...))
	f.Add([]byte{0x40, 32, 0, 0, 0, 9, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, payload, attached, err := decodeCommand(data)
		if err != nil {
			if len(data) >= 2 && data[0]&0x40 == 0 {
				t.Fatalf("%d bytes rejected: %v", len(data), err)
			}
			return
		}
		body := payload
		if typ&AttachedFlag != 0 {
			body = joinAttached(payload, attached)
		} else if attached != nil {
			t.Fatalf("bytes attached to an entry of type %#x", typ)
		}
		re := make([]byte, 2+len(body))
		re[0], re[1] = byte(typ>>8), byte(typ)
		copy(re[2:], body)
		if !bytes.Equal(re, data) {
			t.Fatalf("framing does not round-trip")
		}
	})
}

// Restoring arbitrary bytes returns an error or a valid state; it never
// panics and never half-replaces the state.
func FuzzRestoreSnapshot(f *testing.F) {
	reg := testRegistry()
	s, _ := newStore(reg)
	var good bytes.Buffer
	if err := s.persist(s.ReadTxn(), 7, &good); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add([]byte(`{"format":"cairn-state-v1","index":3}` + "\n" + `{"t":"kv","r":{"key":"a","value":"b","version":3}}` + "\n"))
	f.Add([]byte(`{"format":"cairn-state-v1","index":3}` + "\n" + `{"t":"kv","r":{"key":1}}`))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, _ := newStore(reg)
		abandon := st.AbandonCh()
		if err := st.restore(bytes.NewReader(data)); err != nil {
			select {
			case <-abandon:
				t.Fatal("a failed restore replaced the state")
			default:
			}
			if st.AppliedIndex() != 0 {
				t.Fatal("a failed restore moved the applied index")
			}
		}
	})
}
