// Package commands turns the text of the /geminidb-patch slash command into a
// typed Request, and generates the help text from the same table of
// subcommands, so that help cannot drift from what the parser accepts.
//
// The package is pure: no I/O and no Slack types, so it can be fuzzed on its
// own. Every message it produces is Slack mrkdwn in which &, < and > are
// escaped, and it never echoes more than a short, sanitised piece of the
// user's input.
package commands

import (
	"fmt"
	"strings"
)

// Command is the slash command this package parses, as used in usage lines
// of error messages.
const Command = "/geminidb-patch"

// MaxInstances is the most distinct instances one patch request may name.
const MaxInstances = 100

// MaxTextLen is the longest command text, in bytes, that Parse looks at.
// 100 instance IDs of 64 characters with separators and flags fit easily.
const MaxTextLen = 10000

// Kind is what a Request asks for.
type Kind string

// The kinds of request.
const (
	KindPatch   Kind = "patch"   // plan (and then patch) instances
	KindStatus  Kind = "status"  // show a job or a patch request
	KindList    Kind = "list"    // list instances that have a patch available
	KindHistory Kind = "history" // the last patch requests of the channel
	KindHelp    Kind = "help"    // show the help text
)

// Engines accepted by "list", in canonical spelling.
const (
	EngineCassandra = "cassandra"
	EngineInfluxDB  = "influxdb"
)

// Request is a parsed slash command.
type Request struct {
	Kind      Kind
	Instances []string // KindPatch: IDs or exact names, deduplicated, first-seen order; nil when none
	// Selectors is KindPatch's engine:, name:, tag: and all: instances picked
	// by what they are, added to Instances. Empty when none was given.
	Selectors Selectors
	DryRun    bool // KindPatch: --dry-run, only show the plan
	Force     bool // KindPatch: --force
	// Canary is KindPatch's --canary N: how many instances go first (0: none,
	// the bot's default applies).
	Canary int
	// WaveSize is KindPatch's --wave-size N (1..MaxWaveSize): how many
	// instances go in each wave (0: not given, the bot's default applies).
	WaveSize int
	// MaxErrors is KindPatch's --max-errors E (0..MaxErrorBudget): how many
	// instances may fail or end unknown before the rollout pauses (0, the
	// default, when not given).
	MaxErrors int
	// WaitForWindow is KindPatch's --wait-for-window: instances outside
	// their maintenance window are scheduled for it instead of left out.
	WaitForWindow bool
	// Outdated is KindList's --outdated: what is behind, counted by engine
	// and version.
	Outdated bool
	ID       string // KindStatus: job ID or request ID
	Engine   string // KindList: "", EngineCassandra or EngineInfluxDB
	User     string // KindHistory: only requests by this Slack user ID ("" = anyone)
	Instance string // KindHistory: only requests naming this instance ID or exact name ("" = any)
	Target   string // KindPatch, KindStatus, KindList: --target NAME, "" when not given
}

// String returns the canonical command text of r, without the slash command
// itself, such that Parse(r.String()) returns r again for every Request that
// Parse returned. It returns "" for a Request of unknown Kind.
func (r Request) String() string {
	switch r.Kind {
	case KindPatch:
		parts := append([]string(nil), r.Instances...)
		parts = append(parts, r.Selectors.words()...)
		if r.DryRun {
			parts = append(parts, flagDryRun)
		}
		if r.Force {
			parts = append(parts, flagForce)
		}
		if r.Canary > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", flagCanary, r.Canary))
		}
		if r.WaveSize > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", flagWaveSize, r.WaveSize))
		}
		if r.MaxErrors > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", flagMaxErrors, r.MaxErrors))
		}
		if r.WaitForWindow {
			parts = append(parts, flagWaitForWindow)
		}
		return strings.Join(parts, " ") + r.targetFlag()
	case KindStatus:
		return string(KindStatus) + " " + r.ID + r.targetFlag()
	case KindList:
		s := string(KindList)
		if r.Engine != "" {
			s += " " + r.Engine
		}
		if r.Outdated {
			s += " " + flagOutdated
		}
		return s + r.targetFlag()
	case KindHistory:
		switch {
		case r.User != "":
			return string(KindHistory) + " <@" + r.User + ">"
		case r.Instance != "":
			return string(KindHistory) + " " + r.Instance
		}
		return string(KindHistory)
	case KindHelp:
		return string(KindHelp)
	}
	return ""
}

// targetFlag renders " --target NAME", or "" when no target was given.
func (r Request) targetFlag() string {
	if r.Target == "" {
		return ""
	}
	return " " + flagTarget + " " + r.Target
}

// UsageError is returned by Parse for text it cannot accept. Msg is meant for
// the Slack user: a complete sentence saying what is wrong and what to do,
// followed by the relevant usage line, in mrkdwn, shorter than 500 bytes.
type UsageError struct {
	Msg string
}

// Error returns Msg.
func (e *UsageError) Error() string { return e.Msg }

// Subcommand describes one form of the slash command. Usage and Examples are
// plain text without the slash command; Help escapes them for mrkdwn.
type Subcommand struct {
	Name     string   // "patch" for the default form, which has no keyword
	Usage    string   // e.g. "status <job-id|request-id>"
	Summary  string   // one or two sentences of mrkdwn
	Examples []string // argument text, e.g. "list cassandra"
}

// Subcommands is the table of everything the slash command accepts. Parse
// and Help both follow it; patch comes first because it is the default form
// and has no keyword.
var Subcommands = []Subcommand{
	{
		Name:  string(KindPatch),
		Usage: "<instance|selector>… [--dry-run] [--force] [--canary N] [--wave-size N] [--max-errors E] [--wait-for-window] [--target NAME]",
		Summary: "Plan a patch of GeminiDB instances and ask for confirmation. Name them (IDs or exact names, separated by spaces, commas or new lines; " +
			fmt.Sprintf("at most %d) or select them: ", MaxInstances) +
			"`engine:cassandra`, `engine:influxdb`, `name:GLOB` (`*` any characters, `?` one, against the whole name), `tag:KEY=VALUE`, `all` " +
			"(kinds AND, several of one kind OR; named instances are added; a large selection goes canary first). " +
			"`--dry-run` only shows the plan. `--force` also patches instances outside their maintenance window (the channel message says so). " +
			fmt.Sprintf("`--canary N` (1–%d) sends N instances first and the rest once they completed; a failed canary pauses the rollout until Continue or Stop. ", MaxCanary) +
			fmt.Sprintf("`--wave-size N` (1–%d, waves of N) and `--max-errors E` (failures before the rollout pauses) are not available yet. ", MaxWaveSize) +
			"`--wait-for-window` schedules instances outside their window for its next opening. " +
			"`--target` names the project and region when the bot serves several (default: the channel's, or the only one).",
		Examples: []string{
			"orders-prod users-prod --dry-run",
			"orders-prod-1 orders-prod-2 orders-prod-3 --canary 1 --wait-for-window",
			"3f1c9d0b6e2a4c7d8e9f0a1b2c3d4e5fin13, metrics-influx-01",
			"engine:cassandra name:orders-* --dry-run",
			"tag:env=prod engine:influxdb --canary 2",
		},
	},
	{
		Name:     string(KindStatus),
		Usage:    "status <job-id|request-id> [--target NAME]",
		Summary:  "Show the state of a patch request, or of one instance's patch job (looked up in the target of `--target`, of the channel, or the only one).",
		Examples: []string{"status 0b7f3c2e-5a1d-4e6f-9a8b-7c6d5e4f3a2b"},
	},
	{
		Name:     string(KindList),
		Usage:    "list [cassandra|influxdb] [--outdated] [--target NAME]",
		Summary:  "List the instances that have a patch available, optionally of one engine only; `--outdated` counts them by engine and version, oldest first.",
		Examples: []string{"list", "list influxdb --outdated", "list --target prod-eu-de"},
	},
	{
		Name:  string(KindHistory),
		Usage: "history [<@user>|<instance>]",
		Summary: "Show the last 20 patch requests of this channel (when, who, which instances, how they ended, a link to the thread), " +
			"optionally only those of one person (pick them with @ so Slack makes it a mention) or naming one instance.",
		Examples: []string{"history", "history cass-orders-prod-1"},
	},
	{
		Name:     string(KindHelp),
		Usage:    "help",
		Summary:  "Show this help.",
		Examples: []string{"help"},
	},
}

// Help returns the help text for the slash command named command (for
// example "/geminidb-patch"), generated from Subcommands, as Slack mrkdwn.
func Help(command string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%s* plans and applies GeminiDB patches. Usage:\n", escape(command))
	for _, s := range Subcommands {
		fmt.Fprintf(&b, "\n• `%s %s`\n    %s\n", escape(command), escape(s.Usage), s.Summary)
		for _, ex := range s.Examples {
			fmt.Fprintf(&b, "    e.g. `%s %s`\n", escape(command), escape(ex))
		}
	}
	b.WriteString("\nKeywords and flags are case-insensitive; flags may appear anywhere. " +
		"Backticks around IDs are ignored, other Slack formatting is refused.\n")
	return b.String()
}

// usageLine returns the mrkdwn usage line of the subcommand called name.
func usageLine(name Kind) string {
	for _, s := range Subcommands {
		if s.Name == string(name) {
			return "Usage: `" + Command + " " + escape(s.Usage) + "`"
		}
	}
	return "Usage: `" + Command + " help`"
}

// escape escapes the characters Slack treats as control characters in
// mrkdwn text.
func escape(s string) string {
	return mrkdwnEscaper.Replace(s)
}

var mrkdwnEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")
