package api

import (
	"encoding/json"
	"reflect"
	"strings"
)

// unknownKey returns the first object key in raw that the Go type t has no
// field for ("quota.colour" for a nested one), or "". The decoder's own
// DisallowUnknownFields cannot see into types that decode themselves
// (identity.Resources reads its fields leniently, so that the replicated
// state of a newer node still decodes); requests stay strict through this.
func unknownKey(raw json.RawMessage, t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return "" // not an object: the decoder reports the type error
		}
		fields := map[string]reflect.Type{}
		jsonFields(t, fields)
		for k, v := range obj {
			ft, ok := fields[strings.ToLower(k)]
			if !ok {
				return k
			}
			if bad := unknownKey(v, ft); bad != "" {
				return k + "." + bad
			}
		}
	case reflect.Slice, reflect.Array:
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) == nil {
			for _, it := range items {
				if bad := unknownKey(it, t.Elem()); bad != "" {
					return bad
				}
			}
		}
	case reflect.Map:
		var vals map[string]json.RawMessage
		if json.Unmarshal(raw, &vals) == nil {
			for _, it := range vals {
				if bad := unknownKey(it, t.Elem()); bad != "" {
					return bad
				}
			}
		}
	}
	return ""
}

// jsonFields maps the lower-cased JSON names of t's fields (as
// encoding/json matches them, embedded structs included) to their types.
func jsonFields(t reflect.Type, out map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				jsonFields(ft, out)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[strings.ToLower(name)] = f.Type
	}
}
