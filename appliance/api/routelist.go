package api

// Route is one registered API operation, as tests and tools see it.
type Route struct {
	Method string
	Path   string // with {wildcards}, as registered
	Public bool   // no token required
}

// Routes lists the operations this server registered, in table order.
func (s *Server) Routes() []Route {
	out := make([]Route, len(s.routes))
	for i, rt := range s.routes {
		out[i] = Route{Method: rt.Method, Path: rt.Path, Public: rt.Public}
	}
	return out
}
