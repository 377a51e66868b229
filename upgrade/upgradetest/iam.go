package upgradetest

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
)

type iamUser struct{ domain, user, password string }

// SetAKSK changes the access key and secret key the fake accepts from now
// on, as rotating the key would; empty keys disable AK/SK authentication.
func (s *Server) SetAKSK(ak, sk string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ak, s.sk = ak, sk
}

// RevokeTokens invalidates every token the fake IAM has issued, as a
// password change would; the next API call with one of them gets 401.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// Logins counts successful IAM logins.
func (s *Server) Logins() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}

func (s *Server) authenticate(r *http.Request, body []byte) string {
	s.mu.Lock()
	staticToken, ak, sk := s.staticToken, s.ak, s.sk
	s.mu.Unlock()
	if staticToken == "" && s.iam == nil && ak == "" {
		return ""
	}
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		if staticToken != "" && tok == staticToken {
			return ""
		}
		s.mu.Lock()
		exp, ok := s.tokens[tok]
		s.mu.Unlock()
		if ok && s.now().Before(exp) {
			return ""
		}
		if ok {
			return "token expired"
		}
		return "verify token failed"
	}
	if strings.HasPrefix(r.Header.Get("Authorization"), "SDK-HMAC-SHA256 ") {
		if ak == "" {
			return "AK/SK authentication is not enabled"
		}
		if err := verifyAKSK(r, body, ak, sk, s.now()); err != nil {
			return "verify aksk signature fail: " + err.Error()
		}
		return ""
	}
	return "no credentials"
}

func (s *Server) login(w http.ResponseWriter, body []byte) {
	var req struct {
		Auth struct {
			Identity struct {
				Methods  []string `json:"methods"`
				Password struct {
					User struct {
						Name     string `json:"name"`
						Password string `json:"password"`
						Domain   struct {
							Name string `json:"name"`
						} `json:"domain"`
					} `json:"user"`
				} `json:"password"`
			} `json:"identity"`
			Scope struct {
				Project struct {
					ID string `json:"id"`
				} `json:"project"`
			} `json:"scope"`
		} `json:"auth"`
	}
	if err := json.Unmarshal(body, &req); err != nil || !slices.Contains(req.Auth.Identity.Methods, "password") {
		writeError(w, http.StatusBadRequest, "IAM.0007", "The request body is invalid.")
		return
	}
	u := req.Auth.Identity.Password.User
	if u.Name != s.iam.user || u.Password != s.iam.password || u.Domain.Name != s.iam.domain {
		writeError(w, http.StatusUnauthorized, "APIG.0301", "Incorrect IAM authentication information: the username or password is wrong.")
		return
	}
	if req.Auth.Scope.Project.ID != s.ProjectID {
		writeError(w, http.StatusUnauthorized, "APIG.0301", "Incorrect IAM authentication information: the project is not accessible.")
		return
	}
	tok := "MIIfake" + randomHex(32)
	now := s.now()
	exp := now.Add(s.tokenLifetime)
	s.mu.Lock()
	s.tokens[tok] = exp
	s.logins++
	s.mu.Unlock()
	w.Header().Set("X-Subject-Token", tok)
	writeJSON(w, http.StatusCreated, map[string]any{"token": map[string]any{
		"expires_at": exp.UTC().Format("2006-01-02T15:04:05.000000Z"),
		"issued_at":  now.UTC().Format("2006-01-02T15:04:05.000000Z"),
		"methods":    []string{"password"},
		"project":    map[string]any{"id": s.ProjectID, "name": "eu-de"},
		"user":       map[string]any{"name": s.iam.user, "domain": map[string]any{"name": s.iam.domain}},
	}})
}
