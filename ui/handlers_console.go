package ui

import (
	"bytes"
	"context"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// consoleData loads a VM and mints a fresh console ticket for it, so every
// load of a console page (and the reconnect link) gets a ticket of its own:
// a ticket is spent by the WebSocket it opens. Without one (a reader may
// not open consoles) the page still shows, with the reason in its place.
func (s *server) consoleData(w http.ResponseWriter, r *http.Request, v *view, serial bool) (consoleData, bool) {
	v.nav = "vms"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return consoleData{}, false
	}
	vm, err := s.compute.VM(v.p, r.PathValue("vm"))
	if err != nil {
		s.failPage(w, r, v, err)
		return consoleData{}, false
	}
	d := consoleData{VM: *vm}
	t, err := s.compute.ConsoleTicket(r.Context(), v.p, vm.ID)
	switch {
	case err != nil:
		s.logErr(r, err)
		d.Error = errorText(v.tr, err)
	case serial:
		d.Path = t.SerialPath
	default:
		d.Path = t.VNCPath
	}
	return d, true
}

func (s *server) console(w http.ResponseWriter, r *http.Request, v *view) {
	if d, ok := s.consoleData(w, r, v, false); ok {
		s.render(w, r, http.StatusOK, consolePage(v, d))
	}
}

func (s *server) serial(w http.ResponseWriter, r *http.Request, v *view) {
	d, ok := s.consoleData(w, r, v, true)
	if !ok {
		return
	}
	if s.consoles != nil && d.Path != "" {
		// The page opens with what the VM printed lately (the log can
		// hold what cloud-init printed: only those who may open the
		// console, as a ticket proves, read it).
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		log, err := s.consoles.SerialLog(ctx, v.p, d.VM.ID, recentSerial)
		cancel()
		if err != nil {
			s.logErr(r, err)
		}
		d.Recent = plainSerial(log)
	}
	s.render(w, r, http.StatusOK, serialPage(v, d))
}

// recentSerial is how much of the serial log the console page opens with.
const recentSerial = 16 << 10

// terminalEscape matches what serial.js drops from the live output:
// colour and cursor control sequences.
var terminalEscape = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]`)

// plainSerial turns the tail of a serial log into text as serial.js shows
// it: valid UTF-8 from the first whole line, without escape sequences,
// carriage returns or bells.
func plainSerial(b []byte) string {
	if len(b) >= recentSerial { // cut mid-line (and perhaps mid-rune): start at a line
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	s := terminalEscape.ReplaceAllString(strings.ToValidUTF8(string(b), ""), "")
	out := make([]rune, 0, len(s))
	for _, r := range s {
		switch r {
		case '\r', '\a', 0:
		case '\b': // as a terminal: the character before goes
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, r)
		}
	}
	return string(out)
}
