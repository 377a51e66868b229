package bot

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// DefaultTarget is the name of the one target of a bot configured without
// Config.Targets.
const DefaultTarget = "default"

// Target is one GeminiDB project in one region that the bot patches, with
// its own client (and so its own credentials, credential breaker and IAM
// token), the channels where it is the default and its approvers.
type Target struct {
	Name         string   // what people give with --target; shown in messages
	Region       string   // shown with the name; may be ""
	ProjectID    string   // shown in messages
	BatchEngines []string // engines its batch API accepts
	Channels     []string // channels where it is the default target
	Approvers    []string // user or user-group IDs; empty = the requester confirms
	DB           GeminiDB
	// AllowedChannels, when not empty, are the only channels where the
	// target may be used; AllowedUsers, when not empty, narrows
	// Config.AllowedUsers for it (the targets file's allowed_channels and
	// allowed_users).
	AllowedChannels []string
	AllowedUsers    []string
}

// Label names the target for people: "prod-eu-de (eu-de)".
func (t Target) Label() string {
	if t.Region == "" {
		return t.Name
	}
	return t.Name + " (" + t.Region + ")"
}

// target is a configured Target.
type target struct {
	Target
}

// site is t as the engine sees it.
func (t *target) site() patch.Site {
	return patch.Site{Name: t.Name, Cloud: t.DB, Approvers: t.Approvers}
}

// targetSet is every target of the bot, looked up by name and by channel.
type targetSet struct {
	list      []*target
	byName    map[string]*target // lowercased name
	byChannel map[string]*target
	// fallback is the target of requests stored before targets existed:
	// the one named DefaultTarget, or else the first.
	fallback *target
}

// newTargetSet builds the targets of cfg; without cfg.Targets, the one
// target is cfg's project with db.
func newTargetSet(cfg Config, db GeminiDB) *targetSet {
	ts := cfg.Targets
	if len(ts) == 0 {
		ts = []Target{{Name: DefaultTarget, ProjectID: cfg.ProjectID, BatchEngines: cfg.BatchEngines, Approvers: cfg.Approvers, DB: db}}
	}
	s := &targetSet{byName: map[string]*target{}, byChannel: map[string]*target{}}
	for _, t := range ts {
		tg := &target{Target: t}
		s.list = append(s.list, tg)
		s.byName[strings.ToLower(t.Name)] = tg
		for _, ch := range t.Channels {
			s.byChannel[ch] = tg
		}
	}
	s.fallback = s.list[0]
	if d, ok := s.byName[DefaultTarget]; ok {
		s.fallback = d
	}
	return s
}

// of returns the target request r belongs to, or nil when r names a target
// that is no longer configured.
func (s *targetSet) of(r store.Request) *target {
	if r.Target == "" {
		return s.fallback
	}
	return s.byName[strings.ToLower(r.Target)]
}

// nameOf is the name of r's target, also when it is no longer configured.
func (s *targetSet) nameOf(r store.Request) string {
	if r.Target == "" {
		return s.fallback.Name
	}
	return r.Target
}

// several tells whether the bot has more than one target, and so whether
// messages name the target.
func (s *targetSet) several() bool { return len(s.list) > 1 }

// label is what messages about requests of t say about their target:
// nothing when the bot has only one.
func (s *targetSet) label(t *target) string {
	if !s.several() || t == nil {
		return ""
	}
	return t.Label()
}

// labelOf is label for r's target, by name when it is no longer configured.
func (s *targetSet) labelOf(r store.Request) string {
	if !s.several() {
		return ""
	}
	if t := s.of(r); t != nil {
		return t.Label()
	}
	return s.nameOf(r)
}

// pick chooses the target of a command: the one named (--target), else the
// channel's, else the only one. Otherwise it returns nil and a message for
// the person, listing the targets.
func (s *targetSet) pick(name, channel string) (*target, string) {
	if name != "" {
		if t, ok := s.byName[strings.ToLower(name)]; ok {
			return t, ""
		}
		return nil, fmt.Sprintf("There is no target `%s`; nothing was done. %s", esc(name), s.choices())
	}
	if t, ok := s.byChannel[channel]; ok {
		return t, ""
	}
	if len(s.list) == 1 {
		return s.list[0], ""
	}
	return nil, "Which GeminiDB target do you mean? This channel has no default target, so nothing was done. " + s.choices()
}

// choices lists the targets for a person who must pick one.
func (s *targetSet) choices() string {
	lines := make([]string, len(s.list))
	for i, t := range s.list {
		lines[i] = fmt.Sprintf("• `%s` — %s, project `%s`", esc(t.Name), esc(t.Label()), esc(t.ProjectID))
	}
	return "Run the command again with `--target NAME`, one of:\n" + strings.Join(lines, "\n")
}

// approvers is every approver of every target, for the checks made before
// a click is queued (which cannot yet know the request's target).
func (s *targetSet) approvers() []string {
	var all []string
	for _, t := range s.list {
		for _, a := range t.Approvers {
			if !slices.Contains(all, a) {
				all = append(all, a)
			}
		}
	}
	return all
}

// Sites lists every target for the engine (patch.Fleet).
func (s *targetSet) Sites() []patch.Site {
	out := make([]patch.Site, len(s.list))
	for i, t := range s.list {
		out[i] = t.site()
	}
	return out
}

// SiteOf is the target of r for the engine (patch.Fleet); ok is false when
// it is no longer configured.
func (s *targetSet) SiteOf(r store.Request) (patch.Site, bool) {
	if t := s.of(r); t != nil {
		return t.site(), true
	}
	return patch.Site{Name: s.nameOf(r)}, false
}

var _ patch.Fleet = (*targetSet)(nil)

// appendTarget adds a line naming the target (label) to a message's blocks;
// nothing when label is "" (the bot has one target).
func appendTarget(blocks []slack.Block, label string) []slack.Block {
	if label == "" {
		return blocks
	}
	return append(blocks, contextBlock("GeminiDB target: *"+esc(label)+"*"))
}

// withTarget is appendTarget placing the line right below the first block
// (the message's headline).
func withTarget(blocks []slack.Block, label string) []slack.Block {
	if label == "" || len(blocks) == 0 {
		return appendTarget(blocks, label)
	}
	out := append([]slack.Block{blocks[0]}, appendTarget(nil, label)...)
	return append(out, blocks[1:]...)
}

// titled prefixes a thread reply's title with the target (label); the title
// is unchanged when label is "".
func titled(title, label string) string {
	if label == "" {
		return title
	}
	line := "GeminiDB target: *" + esc(label) + "*"
	if title == "" {
		return line
	}
	return line + "\n" + title
}

// pickTarget is targetSet.pick for a command, answering the person (reply)
// when no target fits; ok is false then.
//
// The target's allowed_channels and allowed_users are checked here, so no
// command reaches a target from a channel or a person it does not allow.
func (b *Bot) pickTarget(ctx context.Context, name, user, channel string, reply func(string, []slack.Block)) (*target, bool) {
	t, msg := b.targets.pick(name, channel)
	if t == nil {
		b.metrics.Commands.WithLabelValues("no_target").Inc()
		reply(msg, nil)
		return nil, false
	}
	reason, msg, err := b.targetRefusal(ctx, t.Target, user, channel)
	if err != nil {
		b.log.Error().Err(err).Str("target", t.Name).Msg("check user-group membership for a target")
	}
	if reason != "" {
		b.metrics.Commands.WithLabelValues("refused").Inc()
		b.audit("refused", auditInfo{User: user, Channel: channel, Target: t.Name}, "reason", reason)
		reply(msg, nil)
		return nil, false
	}
	return t, true
}

// kitOf is the message kit for a request of target tg: console links use
// the target's project and region (nil: the bot's defaults).
func (b *Bot) kitOf(tg *target) kit {
	k := b.kit
	if tg == nil {
		return k
	}
	if tg.ProjectID != "" {
		k.project = tg.ProjectID
	}
	if tg.Region != "" {
		k.region = tg.Region
	}
	return k
}
