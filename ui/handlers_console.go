package ui

import (
	"net/http"
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
	if d, ok := s.consoleData(w, r, v, true); ok {
		s.render(w, r, http.StatusOK, serialPage(v, d))
	}
}
