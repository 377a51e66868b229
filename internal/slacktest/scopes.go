package slacktest

import "strings"

// DefaultScopes are the bot token's scopes unless WithScopes says
// otherwise: those manifest.yml asks for (a test in the root package keeps
// the two equal).
var DefaultScopes = []string{"commands", "chat:write", "channels:read", "groups:read", "usergroups:read"}

// WithScopes sets the scopes of the bot token, which auth.test reports in
// its X-OAuth-Scopes header as Slack does (none: an empty header).
func WithScopes(scopes ...string) Option {
	return func(s *Server) {
		cp := append([]string{}, scopes...)
		s.scopes = &cp
	}
}

// scopeList is the bot token's scopes.
func (s *Server) scopeList() []string {
	if s.scopes != nil {
		return *s.scopes
	}
	return DefaultScopes
}

// scopeHeader is the X-OAuth-Scopes header of Web API answers: the scopes
// separated by commas.
func (s *Server) scopeHeader() string { return strings.Join(s.scopeList(), ",") }
