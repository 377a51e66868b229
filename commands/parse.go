package commands

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The flags of the patch form, in canonical spelling.
const (
	flagDryRun        = "--dry-run"
	flagForce         = "--force"
	flagCanary        = "--canary"
	flagWaitForWindow = "--wait-for-window"
	flagTarget        = "--target"
	flagWaveSize      = "--wave-size"
	flagMaxErrors     = "--max-errors"
	flagOutdated      = "--outdated"
)

// Bounds of the numeric flags.
const (
	// MaxCanary is the largest --canary.
	MaxCanary = 10
	// MaxWaveSize is the largest --wave-size.
	MaxWaveSize = 100
	// MaxErrorBudget is the largest --max-errors.
	MaxErrorBudget = 1000
)

// maxRefLen is the longest instance reference or ID accepted: GeminiDB names
// are at most 64 characters, instance IDs are 36 hex digits plus "in13" and
// job or request IDs are UUIDs (36).
const maxRefLen = 64

// maxShown is how many characters of a user's token a message repeats.
const maxShown = 40

// Parse turns the text of a /geminidb-patch slash command (without the
// command itself) into a Request. The grammar is
//
//	<instance|selector>… [--dry-run] [--force] [--canary N] [--wave-size N] [--max-errors E]
//	                     [--wait-for-window] [--target NAME]
//	status <job-id|request-id> [--target NAME]
//	list [cassandra|influxdb] [--outdated] [--target NAME]
//	history [<@user>|<instance>]
//	help
//
// Instances are separated by spaces, commas, tabs or new lines; flags may
// appear anywhere; keywords and flags are case-insensitive; a flag whose
// dashes a keyboard turned into a long dash (—force) is accepted. Backticks
// are treated as separators, so IDs pasted as `code` or in a code block
// work. Any other Slack formatting (mentions, links, *bold*, _italic_) and
// any "*" (which the cloud API would treat as a fuzzy match) are refused, so
// that only exactly named instances are ever patched; the one exception is
// the mention of a person after history (<@U123> or <@U123|name>, as Slack
// sends a mention picked with @). A keyword (status, list, history, help)
// cannot name an instance: give such an instance by its ID. --target takes
// the next word (or what follows "--target=") as the name of a target; it
// may be given more than once only with the same name.
//
// A selector picks instances by what they are: engine:cassandra,
// engine:influxdb, name:GLOB ('*' and '?', matched against the whole name),
// tag:KEY=VALUE, or all (so an instance named "all" is given by its ID).
// Selectors of different kinds AND together, several of one kind OR, and
// named instances are added (see Selectors). Any other word with a colon
// is refused.
//
// Every error is a *UsageError.
func Parse(text string) (Request, error) {
	if guessKind(text) == KindHistory {
		return parseHistory(text)
	}
	if msg := checkText(text); msg != "" {
		return Request{}, usage(guessKind(text), msg)
	}
	tokens := fields(text)
	if len(tokens) == 0 {
		return Request{}, &UsageError{Msg: "Tell me which instances to patch (IDs or exact names), or what else to do. " +
			usageLine(KindPatch) + " — see `" + Command + " help` for more."}
	}

	var args, patchFlags, listFlags []string
	var opts patchOptions
	outdated := false
	target := ""
	for i := 0; i < len(tokens); i++ {
		tok := tokens[i]
		if !isFlag(tok) {
			args = append(args, tok)
			continue
		}
		name, value, hasValue := strings.Cut(asciiLower(normalizeDashes(tok)), "=")
		if name == flagTarget {
			if !hasValue {
				if i+1 == len(tokens) || isFlag(tokens[i+1]) {
					return Request{}, usage(guessKind(text), fmt.Sprintf("`%s` needs the name of a target after it.", flagTarget))
				}
				i++
				value = tokens[i]
			} else {
				// The name keeps its case: cut it from the token itself.
				value = tok[strings.IndexByte(tok, '=')+1:]
			}
			if value == "" {
				return Request{}, usage(guessKind(text), fmt.Sprintf("`%s` needs the name of a target after it.", flagTarget))
			}
			if msg := checkRef(value, "target names"); msg != "" {
				return Request{}, usage(guessKind(text), msg)
			}
			if target != "" && target != value {
				return Request{}, usage(guessKind(text), fmt.Sprintf(
					"You named two targets, `%s` and %s; give `%s` once.", escape(target), show(value), flagTarget))
			}
			target = value
			continue // allowed with every subcommand but help
		}
		switch name {
		case flagDryRun:
			opts.dryRun = true
		case flagForce:
			opts.force = true
		case flagWaitForWindow:
			opts.waitForWindow = true
		case flagOutdated:
			outdated = true
		case flagCanary, flagWaveSize, flagMaxErrors:
			nf := numericFlags[name]
			if !hasValue {
				if i+1 >= len(tokens) {
					return Request{}, usage(guessKind(text), fmt.Sprintf("`%s` needs a number: %s (%s).", name, nf.what, nf.bounds()))
				}
				i++
				value = tokens[i]
			}
			n, ok := number(value)
			if !ok || n < nf.min || n > nf.max {
				return Request{}, usage(guessKind(text), fmt.Sprintf("`%s` takes a number from %s, not %s.", name, nf.bounds(), show(value)))
			}
			*nf.field(&opts) = n
		default:
			return Request{}, usage(guessKind(text), fmt.Sprintf(
				"%s is not an option I know; the options are `%s`, `%s`, `%s N`, `%s N`, `%s E`, `%s`, `%s` and `%s NAME`.",
				show(tok), flagDryRun, flagForce, flagCanary, flagWaveSize, flagMaxErrors, flagWaitForWindow, flagOutdated, flagTarget))
		}
		if _, numeric := numericFlags[name]; hasValue && !numeric {
			return Request{}, usage(guessKind(text), fmt.Sprintf("`%s` takes no value.", name))
		}
		if name == flagOutdated {
			listFlags = append(listFlags, tok)
		} else {
			patchFlags = append(patchFlags, tok)
		}
	}

	kind := KindPatch
	if len(args) > 0 {
		if k, ok := keyword(args[0]); ok {
			kind = k
			args = args[1:]
		}
	}
	if kind != KindPatch && len(patchFlags) > 0 {
		return Request{}, usage(kind, fmt.Sprintf(
			"%s only applies when patching instances; `%s` takes %s.", show(patchFlags[0]), kind, takesOptions(kind)))
	}
	if kind != KindList && len(listFlags) > 0 {
		return Request{}, usage(kind, fmt.Sprintf(
			"%s only applies to `%s` (`%s %s`); `%s` takes %s.", show(listFlags[0]), KindList, KindList, flagOutdated, kind, takesOptions(kind)))
	}
	if kind == KindHelp && target != "" {
		return Request{}, usage(KindHelp, fmt.Sprintf("`%s` takes no options.", KindHelp))
	}

	var r Request
	var err error
	switch kind {
	case KindStatus:
		r, err = parseStatus(args)
	case KindList:
		r, err = parseList(args, outdated)
	case KindHelp:
		if len(args) > 0 {
			return Request{}, usage(KindHelp, "`help` takes no arguments.")
		}
		return Request{Kind: KindHelp}, nil
	default:
		r, err = parsePatch(args, opts)
	}
	if err != nil {
		return Request{}, err
	}
	r.Target = target
	return r, nil
}

// patchOptions are the flags of the patch form.
type patchOptions struct {
	dryRun, force, waitForWindow  bool
	canary, waveSize, errorBudget int
}

// numericFlag describes a flag that takes a number.
type numericFlag struct {
	min, max int
	what     string                     // what the number says, for messages
	field    func(o *patchOptions) *int // where the number goes
}

// bounds renders the flag's range for a message: "1 to 10".
func (f numericFlag) bounds() string { return fmt.Sprintf("%d to %d", f.min, f.max) }

// numericFlags are the flags that take a number, by canonical name.
var numericFlags = map[string]numericFlag{
	flagCanary:    {1, MaxCanary, "how many instances go first", func(o *patchOptions) *int { return &o.canary }},
	flagWaveSize:  {1, MaxWaveSize, "how many instances go in each wave", func(o *patchOptions) *int { return &o.waveSize }},
	flagMaxErrors: {0, MaxErrorBudget, "how many instances may fail or end unknown before the rollout pauses", func(o *patchOptions) *int { return &o.errorBudget }},
}

// takesOptions says which options kind takes, for a message.
func takesOptions(kind Kind) string {
	switch kind {
	case KindPatch:
		return "every option but `" + flagOutdated + "`"
	case KindList:
		return "no option but `" + flagOutdated + "` and `" + flagTarget + "`"
	case KindStatus:
		return "no option but `" + flagTarget + "`"
	}
	return "no options"
}

// number parses a decimal number of at most four digits.
func number(s string) (int, bool) {
	if len(s) == 0 || len(s) > 4 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

func parsePatch(args []string, o patchOptions) (Request, error) {
	if len(args) == 0 {
		return Request{}, usage(KindPatch, "Tell me which instances to patch: give their IDs or exact names, or a selector such as `"+prefixEngine+EngineCassandra+"`.")
	}
	seen := make(map[string]bool, len(args))
	instances := make([]string, 0, len(args))
	var sel Selectors
	for _, a := range args {
		if isSelector(a) {
			if msg := sel.addSelector(a); msg != "" {
				return Request{}, usage(KindPatch, msg)
			}
			continue
		}
		if k, ok := keyword(a); ok {
			return Request{}, usage(KindPatch, fmt.Sprintf(
				"`%s` is a subcommand, so it cannot name an instance here; give that instance by its ID.", k))
		}
		if msg := checkRef(a, "instance names and IDs"); msg != "" {
			return Request{}, usage(KindPatch, msg)
		}
		if !seen[a] {
			seen[a] = true
			instances = append(instances, a)
		}
	}
	if len(instances) > MaxInstances {
		return Request{}, usage(KindPatch, fmt.Sprintf(
			"You listed %d instances, but one request can patch at most %d; split them into several requests.",
			len(instances), MaxInstances))
	}
	if len(instances) == 0 {
		instances = nil // selectors only
	}
	if n := sel.count(); n > MaxSelectors {
		return Request{}, usage(KindPatch, fmt.Sprintf(
			"You gave %d selectors, but one request takes at most %d; use `*` in a `%sGLOB` or a tag to select more with one.", n, MaxSelectors, prefixName))
	}
	return Request{Kind: KindPatch, Instances: instances, Selectors: sel, DryRun: o.dryRun, Force: o.force, Canary: o.canary,
		WaveSize: o.waveSize, MaxErrors: o.errorBudget, WaitForWindow: o.waitForWindow}, nil
}

func parseStatus(args []string) (Request, error) {
	switch {
	case len(args) == 0:
		return Request{}, usage(KindStatus, "Tell me which job or patch request to show: give its ID.")
	case len(args) > 1:
		return Request{}, usage(KindStatus, fmt.Sprintf(
			"`status` takes exactly one job or request ID, but you gave %d.", len(args)))
	}
	if msg := checkRef(args[0], "job and request IDs"); msg != "" {
		return Request{}, usage(KindStatus, msg)
	}
	return Request{Kind: KindStatus, ID: args[0]}, nil
}

func parseList(args []string, outdated bool) (Request, error) {
	if len(args) > 1 {
		return Request{}, usage(KindList, fmt.Sprintf("`list` takes at most one engine, but you gave %d words.", len(args)))
	}
	if len(args) == 0 {
		return Request{Kind: KindList, Outdated: outdated}, nil
	}
	switch asciiLower(args[0]) {
	case EngineCassandra:
		return Request{Kind: KindList, Engine: EngineCassandra, Outdated: outdated}, nil
	case EngineInfluxDB, "influx":
		return Request{Kind: KindList, Engine: EngineInfluxDB, Outdated: outdated}, nil
	}
	return Request{}, usage(KindList, fmt.Sprintf(
		"I can list `%s` or `%s` instances, not %s.", EngineCassandra, EngineInfluxDB, show(args[0])))
}

// parseHistory parses "history [<@user>|<instance>]". A mention may carry
// a label with spaces, so it is taken out of the text before the text is
// split.
func parseHistory(text string) (Request, error) {
	if msg := checkPlain(text); msg != "" {
		return Request{}, usage(KindHistory, msg)
	}
	var user string
	rest := text
	if i := strings.IndexByte(text, '<'); i >= 0 {
		j := strings.IndexByte(text[i:], '>')
		id, ok := "", false
		if j > 0 {
			id, ok = mentionID(text[i+1 : i+j])
		}
		switch {
		case !ok && strings.HasPrefix(text[i:], "<@"):
			return Request{}, usage(KindHistory, "That is not a Slack user mention I can read; pick the person from Slack's list after typing @.")
		case !ok:
			return Request{}, usage(KindHistory, checkMarkup(text))
		}
		rest = text[:i] + " " + text[i+j+1:]
		if strings.ContainsAny(rest, "<>") {
			return Request{}, usage(KindHistory, "`history` takes one person or one instance, not several.")
		}
		user = id
	}
	var args []string
	for _, tok := range fields(rest) {
		if isFlag(tok) {
			where := "when patching instances"
			if asciiLower(normalizeDashes(tok)) == flagOutdated {
				where = "to `" + string(KindList) + "`"
			}
			return Request{}, usage(KindHistory, fmt.Sprintf(
				"%s only applies %s; `history` takes no options.", show(tok), where))
		}
		args = append(args, tok)
	}
	args = args[1:] // the keyword: guessKind found it first
	switch {
	case user != "" && len(args) > 0:
		return Request{}, usage(KindHistory, "`history` takes one person or one instance, not both.")
	case len(args) > 1:
		return Request{}, usage(KindHistory, fmt.Sprintf("`history` takes one person or one instance, but you gave %d words.", len(args)))
	case user != "":
		return Request{Kind: KindHistory, User: user}, nil
	case len(args) == 0:
		return Request{Kind: KindHistory}, nil
	}
	arg := args[0]
	if strings.HasPrefix(arg, "@") {
		return Request{}, usage(KindHistory, fmt.Sprintf(
			"%s reached me as plain text, not as a mention: pick the person from Slack's list after typing @ (the app must escape users, as manifest.yml sets).", show(arg)))
	}
	if k, ok := keyword(arg); ok {
		return Request{}, usage(KindHistory, fmt.Sprintf(
			"`%s` is a subcommand, so it cannot name an instance here; give that instance by its ID.", k))
	}
	if msg := checkRef(arg, "instance names and IDs"); msg != "" {
		return Request{}, usage(KindHistory, msg)
	}
	return Request{Kind: KindHistory, Instance: arg}, nil
}

// mentionID returns the user ID of a Slack user mention's inside
// ("@U123" or "@U123|name"), and whether it is one.
func mentionID(inner string) (string, bool) {
	id, _, _ := strings.Cut(inner, "|")
	id, ok := strings.CutPrefix(id, "@")
	if !ok || len(id) < 3 || len(id) > 24 || (id[0] != 'U' && id[0] != 'W') {
		return "", false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return "", false
		}
	}
	return id, true
}

// usage builds the UsageError for the subcommand kind.
func usage(kind Kind, msg string) *UsageError {
	return &UsageError{Msg: msg + "\n" + usageLine(kind)}
}

// fields splits text at separators.
func fields(text string) []string {
	return strings.FieldsFunc(text, isSeparator)
}

// isSeparator reports whether r separates tokens: any white space, commas
// and backticks (so that `code` formatting is simply ignored).
func isSeparator(r rune) bool {
	return unicode.IsSpace(r) || r == ',' || r == '`'
}

// isFlag reports whether tok is meant as a flag: it starts with a hyphen or
// with a dash that autocorrection made of "--".
func isFlag(tok string) bool {
	return strings.HasPrefix(tok, "-") || strings.HasPrefix(tok, "—") || strings.HasPrefix(tok, "–")
}

// normalizeDashes turns a leading em or en dash into "--".
func normalizeDashes(tok string) string {
	for _, d := range []string{"—", "–"} {
		if rest, ok := strings.CutPrefix(tok, d); ok {
			return "--" + rest
		}
	}
	return tok
}

// keyword returns the subcommand that tok names, if any.
func keyword(tok string) (Kind, bool) {
	switch k := Kind(asciiLower(tok)); k {
	case KindStatus, KindList, KindHistory, KindHelp:
		return k, true
	}
	return "", false
}

// guessKind returns the subcommand text is probably about, to pick the usage
// line of an error found before the text is fully parsed.
func guessKind(text string) Kind {
	f := fields(text)
	for _, tok := range f {
		if isFlag(tok) {
			continue
		}
		if k, ok := keyword(tok); ok {
			return k
		}
		break
	}
	return KindPatch
}

// asciiLower lowercases s if it is pure ASCII and returns it unchanged
// otherwise, so that Unicode case folding (ſ, K) never makes a keyword.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return s
		}
	}
	return strings.ToLower(s)
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
