package api

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
)

// Any request body decodes to a value or to a 4xx *Error; never a panic, a
// 5xx, or a value accepted along with trailing garbage.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"name":"p1","description":"x","quota":{"instances":1}}`))
	f.Add([]byte(`{"name":`))
	f.Add([]byte(`{"name":"a"} {"name":"b"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{0xff, 0xfe})
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&identity.ProjectSpec{}, &identity.UserSpec{}, &identity.FlavorSpec{}, &identity.Resources{}, &loginRequest{}} {
			r := httptest.NewRequest("POST", "/api/v1/x", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			err := decode(r, v)
			if err == nil {
				continue
			}
			var ae *Error
			if !errors.As(err, &ae) || ae.Status < 400 || ae.Status > 499 || ae.Code == "" {
				t.Fatalf("decode error is not a client error: %#v", err)
			}
		}
	})
}
