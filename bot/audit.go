package bot

import "github.com/geminidb-patch-bot/geminidb-patch-bot/store"

// auditInfo is who did what to which request.
type auditInfo struct {
	RequestID string
	User      string
	Channel   string
	Instances []string
	Target    string // the GeminiDB target; "" before one was picked
	// stored marks an event about a stored request, whose empty Target
	// means the default target (a request from before targets existed).
	stored bool
}

// requestAudit is the auditInfo of an event about the stored request r.
func requestAudit(r store.Request, user string, instances []string) auditInfo {
	return auditInfo{RequestID: r.ID, User: user, Channel: r.Channel, Instances: instances, Target: r.Target, stored: true}
}

// audit writes one structured audit event ("audit":true) per decision:
// requested, refused, confirmed, approval_requested, approved, rejected,
// cancelled, expired, submitted, not_submitted, job_finished, done.
// kv are extra key/value pairs (string keys).
func (b *Bot) audit(event string, a auditInfo, kv ...any) {
	if a.stored && a.Target == "" {
		a.Target = b.targets.fallback.Name
	}
	e := b.log.Info().Bool("audit", true).Str("event", event).
		Str("request_id", a.RequestID).Str("user", a.User).Str("channel", a.Channel).
		Strs("instance_ids", a.Instances)
	if a.Target != "" {
		e = e.Str("target", a.Target)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if k, ok := kv[i].(string); ok {
			e = e.Interface(k, kv[i+1])
		}
	}
	e.Msg("audit: " + event)
}
