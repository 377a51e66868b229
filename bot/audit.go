package bot

// auditInfo is who did what to which request.
type auditInfo struct {
	RequestID string
	User      string
	Channel   string
	Instances []string
}

// audit writes one structured audit event ("audit":true) per decision:
// requested, refused, confirmed, approval_requested, approved, rejected,
// cancelled, expired, submitted, not_submitted, job_finished, done.
// kv are extra key/value pairs (string keys).
func (b *Bot) audit(event string, a auditInfo, kv ...any) {
	e := b.log.Info().Bool("audit", true).Str("event", event).
		Str("request_id", a.RequestID).Str("user", a.User).Str("channel", a.Channel).
		Strs("instance_ids", a.Instances)
	for i := 0; i+1 < len(kv); i += 2 {
		if k, ok := kv[i].(string); ok {
			e = e.Interface(k, kv[i+1])
		}
	}
	e.Msg("audit: " + event)
}
