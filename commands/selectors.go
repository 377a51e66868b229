package commands

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Selector prefixes and the keyword that selects every instance, in
// canonical spelling.
const (
	prefixEngine = "engine:"
	prefixName   = "name:"
	prefixTag    = "tag:"
	selectAll    = "all"
)

// MaxSelectors is the most selectors one request may give.
const MaxSelectors = 20

// Limits of tag keys and values, as the cloud's tags have them.
const (
	maxTagKeyLen   = 36
	maxTagValueLen = 43
)

// Tag is a tag:KEY=VALUE selector.
type Tag struct {
	Key   string
	Value string
}

// Selectors pick instances of the target by what they are instead of by
// name. Kinds AND together; several of one kind OR; instances named in the
// same request are added. Every list is deduplicated, in first-seen order.
type Selectors struct {
	All     bool     // all: every instance of the target
	Engines []string // engine:cassandra, engine:influxdb (canonical spelling)
	Names   []string // name:GLOB: '*' any run of characters, '?' one, matched against the whole name
	Tags    []Tag    // tag:KEY=VALUE
}

// Empty reports whether no selector was given.
func (s Selectors) Empty() bool {
	return !s.All && len(s.Engines) == 0 && len(s.Names) == 0 && len(s.Tags) == 0
}

// String renders the selectors as the command words that give them, kind
// by kind, e.g. "engine:cassandra name:orders-*"; "" when none was given.
func (s Selectors) String() string { return strings.Join(s.words(), " ") }

// count is the number of selectors.
func (s Selectors) count() int {
	n := len(s.Engines) + len(s.Names) + len(s.Tags)
	if s.All {
		n++
	}
	return n
}

// words renders the selectors as command words, kind by kind.
func (s Selectors) words() []string {
	var out []string
	if s.All {
		out = append(out, selectAll)
	}
	for _, e := range s.Engines {
		out = append(out, prefixEngine+e)
	}
	for _, n := range s.Names {
		out = append(out, prefixName+n)
	}
	for _, t := range s.Tags {
		out = append(out, prefixTag+t.Key+"="+t.Value)
	}
	return out
}

// isSelector reports whether tok is meant as a selector: the keyword all,
// or a word with a colon (which no instance name or ID has).
func isSelector(tok string) bool {
	return strings.IndexByte(tok, ':') >= 0 || (len(tok) == len(selectAll) && asciiLower(tok) == selectAll)
}

// addSelector parses tok (see isSelector) into s. It returns "" or what is
// wrong with tok, for the user.
func (s *Selectors) addSelector(tok string) string {
	if asciiLower(tok) == selectAll {
		s.All = true
		return ""
	}
	prefix, value, _ := strings.Cut(tok, ":")
	prefix = asciiLower(prefix) + ":"
	switch prefix {
	case prefixEngine:
		var e string
		switch asciiLower(value) {
		case EngineCassandra:
			e = EngineCassandra
		case EngineInfluxDB, "influx":
			e = EngineInfluxDB
		case "":
			return fmt.Sprintf("`%s` needs an engine after it: `%s%s` or `%s%s`.", prefixEngine, prefixEngine, EngineCassandra, prefixEngine, EngineInfluxDB)
		default:
			return fmt.Sprintf("I can select `%s%s` or `%s%s`, not %s.", prefixEngine, EngineCassandra, prefixEngine, EngineInfluxDB, show(tok))
		}
		s.Engines = appendNew(s.Engines, e)
	case prefixName:
		if msg := checkGlob(value); msg != "" {
			return msg
		}
		s.Names = appendNew(s.Names, value)
	case prefixTag:
		key, val, ok := strings.Cut(value, "=")
		if !ok || key == "" || val == "" {
			return fmt.Sprintf("%s is not a tag selector I can read: write `%sKEY=VALUE`, e.g. `%senv=prod`.", show(tok), prefixTag, prefixTag)
		}
		if msg := checkTagPart(key, "tag keys", maxTagKeyLen, false); msg != "" {
			return msg
		}
		if msg := checkTagPart(val, "tag values", maxTagValueLen, true); msg != "" {
			return msg
		}
		t := Tag{Key: key, Value: val}
		for _, have := range s.Tags {
			if have == t {
				return ""
			}
		}
		s.Tags = append(s.Tags, t)
	default:
		return fmt.Sprintf("%s is not a selector I know; the selectors are `%sENGINE`, `%sGLOB`, `%sKEY=VALUE` and `%s`.",
			show(tok), prefixEngine, prefixName, prefixTag, selectAll)
	}
	return ""
}

// checkGlob validates the pattern of a name: selector; "" when it is fine.
func checkGlob(glob string) string {
	if glob == "" {
		return fmt.Sprintf("`%s` needs a pattern after it, e.g. `%sorders-*` (`*` matches anything, `?` one character).", prefixName, prefixName)
	}
	for _, r := range glob {
		if r < utf8.RuneSelf && (isAlnum(byte(r)) || r == '-' || r == '_' || r == '*' || r == '?') {
			continue
		}
		return fmt.Sprintf("%s contains %s, but name patterns have only letters, digits, `-`, `_`, `*` and `?`.", show(prefixName+glob), showRune(r))
	}
	if n := utf8.RuneCountInString(glob); n > maxRefLen {
		return fmt.Sprintf("%s is %d characters long, but name patterns have at most %d.", show(prefixName+glob), n, maxRefLen)
	}
	return ""
}

// checkTagPart validates a tag key or value; "" when it is fine. Values may
// also contain dots, as the cloud's tag values do.
func checkTagPart(s, what string, maxLen int, dots bool) string {
	for _, r := range s {
		if r < utf8.RuneSelf && (isAlnum(byte(r)) || r == '-' || r == '_' || (dots && r == '.')) {
			continue
		}
		allowed := "letters, digits, `-` and `_`"
		if dots {
			allowed = "letters, digits, `-`, `_` and `.`"
		}
		return fmt.Sprintf("%s contains %s, but %s have only %s.", show(s), showRune(r), what, allowed)
	}
	if n := utf8.RuneCountInString(s); n > maxLen {
		return fmt.Sprintf("%s is %d characters long, but %s have at most %d.", show(s), n, what, maxLen)
	}
	return ""
}

// appendNew appends s to list unless it is there already.
func appendNew(list []string, s string) []string {
	for _, have := range list {
		if have == s {
			return list
		}
	}
	return append(list, s)
}
