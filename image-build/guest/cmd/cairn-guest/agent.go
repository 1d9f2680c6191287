//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A minimal qemu-guest-agent: enough of qga/qapi-schema.json for the host
// to sync with it and to freeze and thaw the guest (which here means
// pausing the disk scribblers between records and syncing). It reads one
// JSON command per line from the virtio-serial port QEMU names
// org.qemu.guest_agent.0; a 0xFF byte resets its parser, as qemu-ga's does.

const agentPort = "org.qemu.guest_agent.0"

// agentCommands are the commands answered, for guest-info.
var agentCommands = []string{"guest-sync-delimited", "guest-sync", "guest-ping", "guest-info",
	"guest-fsfreeze-freeze", "guest-fsfreeze-thaw", "guest-fsfreeze-status"}

// runAgent finds the agent's port (waiting for it to appear) and serves it
// for ever.
func runAgent(con *console, sc *scribblers) {
	var f *os.File
	for waited := 0; ; waited++ {
		if path := findPort(agentPort); path != "" {
			var err error
			if f, err = os.OpenFile(path, os.O_RDWR, 0); err == nil {
				con.Printf("guest agent on %s", path)
				break
			}
			con.Printf("guest agent: %v", err)
		}
		if waited == 50 {
			con.Printf("guest agent: no %s port yet; still looking", agentPort)
		}
		time.Sleep(200 * time.Millisecond)
	}
	a := &agent{con: con, sc: sc, w: f}
	a.serve(bufio.NewReader(patientReader{f}))
}

// findPort is the device of the virtio-serial port called name: udev's
// /dev/virtio-ports/NAME link if there is one (there is no udev here),
// else the vportNpM whose sysfs name it is.
func findPort(name string) string {
	if p := filepath.Join("/dev/virtio-ports", name); fileExists(p) {
		return p
	}
	ports, _ := filepath.Glob("/sys/class/virtio-ports/vport*")
	for _, p := range ports {
		if b, err := os.ReadFile(filepath.Join(p, "name")); err == nil && strings.TrimSpace(string(b)) == name {
			if dev := filepath.Join("/dev", filepath.Base(p)); fileExists(dev) {
				return dev
			}
		}
	}
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// patientReader waits out the port's end of file: reading a virtio-serial
// port while no host client is connected returns 0 bytes at once.
type patientReader struct{ r io.Reader }

func (p patientReader) Read(b []byte) (int, error) {
	for {
		n, err := p.r.Read(b)
		if n > 0 {
			return n, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type agent struct {
	con *console
	sc  *scribblers
	w   io.Writer
}

// maxCommand bounds one command line; longer ones are dropped.
const maxCommand = 64 << 10

func (a *agent) serve(r *bufio.Reader) {
	var line []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			a.con.Printf("guest agent: %v", err)
			return
		}
		switch {
		case c == 0xFF: // a client's reset: drop what came before
			line = line[:0]
		case c == '\n':
			if len(bytes.TrimSpace(line)) > 0 {
				a.handle(line)
			}
			line = line[:0]
		case len(line) < maxCommand:
			line = append(line, c)
		}
	}
}

type agentError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (a *agent) handle(line []byte) {
	var req struct {
		Execute   string          `json:"execute"`
		Arguments json.RawMessage `json:"arguments"`
		ID        json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(line, &req); err != nil {
		a.reply(false, nil, nil, &agentError{"GenericError", "JSON parse error: " + err.Error()})
		return
	}
	ret, e := a.run(req.Execute, req.Arguments)
	a.reply(req.Execute == "guest-sync-delimited", req.ID, ret, e)
}

func (a *agent) run(cmd string, args json.RawMessage) (any, *agentError) {
	switch cmd {
	case "guest-sync-delimited", "guest-sync":
		var arg struct {
			ID *json.Number `json:"id"`
		}
		d := json.NewDecoder(bytes.NewReader(args))
		d.UseNumber()
		if err := d.Decode(&arg); err != nil || arg.ID == nil {
			return nil, &agentError{"GenericError", "Parameter 'id' is missing"}
		}
		return *arg.ID, nil
	case "guest-ping":
		return struct{}{}, nil
	case "guest-info":
		type info struct {
			Name            string `json:"name"`
			Enabled         bool   `json:"enabled"`
			SuccessResponse bool   `json:"success-response"`
		}
		cmds := make([]info, len(agentCommands))
		for i, c := range agentCommands {
			cmds[i] = info{c, true, true}
		}
		return map[string]any{"version": "cairn-guest", "supported_commands": cmds}, nil
	case "guest-fsfreeze-freeze":
		n, ok := a.sc.freeze(a.con)
		if !ok {
			return nil, &agentError{"GenericError", "Command guest-fsfreeze-freeze has been disabled: the agent is in frozen state"}
		}
		return n, nil
	case "guest-fsfreeze-thaw":
		return a.sc.thaw(a.con), nil
	case "guest-fsfreeze-status":
		if a.sc.isFrozen() {
			return "frozen", nil
		}
		return "thawed", nil
	}
	return nil, &agentError{"CommandNotFound", "The command " + cmd + " has not been found"}
}

func (a *agent) reply(delimited bool, id json.RawMessage, ret any, e *agentError) {
	msg := map[string]any{}
	if e != nil {
		msg["error"] = e
	} else {
		msg["return"] = ret
	}
	if len(id) > 0 {
		msg["id"] = id
	}
	b, err := json.Marshal(msg)
	if err != nil {
		b = []byte(`{"error": {"class": "GenericError", "desc": "cannot encode the reply"}}`)
	}
	if delimited {
		b = append([]byte{0xFF}, b...)
	}
	if _, err := a.w.Write(append(b, '\n')); err != nil {
		a.con.Printf("guest agent: write: %v", err)
	}
}
