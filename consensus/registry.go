package consensus

import (
	"fmt"
	"sort"

	"github.com/hashicorp/go-memdb"
)

// MessageType numbers a replicated command. Values are never reused; a retired
// command keeps its number forever.
//
// Ranges, so packages never collide:
//
//	0-31      consensus itself
//	32-127    appliance (identity, flavors, quotas, audit)
//	128-255   storage
//	256-383   hypervisor
//	384-511   netfabric
//
// Types are below 0x4000: the top two bits are flags (IgnoreUnknownTypeFlag,
// AttachedFlag).
type MessageType uint16

// IgnoreUnknownTypeFlag marks a command that an older node which does not know
// its type may skip instead of panicking, for forward compatibility during
// rolling upgrades (the idea is Nomad's).
const IgnoreUnknownTypeFlag MessageType = 0x8000

// Handler applies one decoded command inside a write transaction. A returned
// error rejects the command and leaves the state unchanged. Handlers must be
// deterministic: no clocks, randomness or I/O; timestamps and IDs travel in the
// command.
type Handler func(tx *Tx, payload []byte) (any, error)

type handlerEntry struct {
	name string
	fn   Handler
}

type tableEntry struct {
	schema *memdb.TableSchema
	newFn  func() any
}

// Registry collects the tables and command handlers of every domain package.
// It is filled before the Node starts and read-only afterwards.
type Registry struct {
	tables   map[string]tableEntry
	handlers map[MessageType]handlerEntry
	since    map[MessageType]int // the protocol that added a command (protocol.go)
}

// NewRegistry returns a registry holding consensus' own tables and commands.
func NewRegistry() *Registry {
	r := &Registry{tables: map[string]tableEntry{}, handlers: map[MessageType]handlerEntry{}, since: map[MessageType]int{}}
	registerClusterTables(r)
	registerProtocolTables(r)
	registerAdmissionTables(r)
	return r
}

// Singleton indexes a table of one row: its unique "id" index, asked
// with no arguments, finds the row (a CA, a settings record).
type Singleton struct{}

func (Singleton) FromObject(any) (bool, []byte, error) { return true, []byte{0}, nil }
func (Singleton) FromArgs(...any) ([]byte, error)      { return []byte{0}, nil }

// RegisterTable adds a table whose rows are *T. Its schema must have an "id" index;
// snapshots stream rows in that index's order.
func RegisterTable[T any](r *Registry, schema *memdb.TableSchema) {
	if _, dup := r.tables[schema.Name]; dup {
		panic(fmt.Sprintf("consensus: table %q registered twice", schema.Name))
	}
	if _, ok := schema.Indexes["id"]; !ok {
		panic(fmt.Sprintf("consensus: table %q has no id index", schema.Name))
	}
	r.tables[schema.Name] = tableEntry{schema: schema, newFn: func() any { return new(T) }}
}

// Handle registers fn for commands of type t whose payload is a JSON-encoded C.
// A payload that does not decode is a bug in the writer, so it panics: the FSM
// must never silently diverge.
// (See codec.go for the JSON codec.)
func Handle[C any](r *Registry, t MessageType, name string, fn func(tx *Tx, cmd *C) (any, error)) {
	HandleRaw(r, t, name, func(tx *Tx, payload []byte) (any, error) {
		var c C
		if err := unmarshal(payload, &c); err != nil {
			panic(fmt.Sprintf("consensus: decode %s (type %d): %v", name, t, err))
		}
		return fn(tx, &c)
	})
}

// HandleSince registers a command added in protocol since (protocol.go):
// Apply refuses it until every server runs that protocol.
func HandleSince[C any](r *Registry, t MessageType, name string, since int, fn func(tx *Tx, cmd *C) (any, error)) {
	Handle(r, t, name, fn)
	r.since[t.base()] = since
}

// HandleRaw registers a handler that decodes its own payload.
func HandleRaw(r *Registry, t MessageType, name string, fn Handler) {
	if t&AttachedFlag != 0 {
		panic(fmt.Sprintf("consensus: message type %#x for %s uses the bit that marks attached bytes", t, name))
	}
	t = t.base()
	if prev, dup := r.handlers[t]; dup {
		panic(fmt.Sprintf("consensus: message type %d registered for %s and %s", t, prev.name, name))
	}
	r.handlers[t] = handlerEntry{name: name, fn: fn}
}

func (r *Registry) schema() *memdb.DBSchema {
	s := &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{}}
	for name, t := range r.tables {
		s.Tables[name] = t.schema
	}
	return s
}

func (r *Registry) tableNames() []string {
	names := make([]string, 0, len(r.tables))
	for n := range r.tables {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// CommandName returns the registered name of a message type, for logs and metrics.
func (r *Registry) CommandName(t MessageType) string {
	if h, ok := r.handlers[t.base()]; ok {
		return h.name
	}
	return fmt.Sprintf("unknown(%d)", t)
}
