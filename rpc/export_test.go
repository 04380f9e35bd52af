package rpc

// QueueLen is how many commands wait in a session's queue; -1 when the
// session is not live.
func QueueLen(s *Service, sessionID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.live[sessionID]; l != nil {
		return len(l.queue)
	}
	return -1
}
