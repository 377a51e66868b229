package demo

import (
	"encoding/json"
	"regexp"
	"strings"
)

// Emoji maps the shortcodes the bot uses (and a few common ones) to the
// characters Slack shows. The page and the transcript both use it.
var Emoji = map[string]string{
	"warning":                "⚠️",
	"x":                      "❌",
	"white_check_mark":       "✅",
	"heavy_check_mark":       "✔️",
	"raised_hand":            "✋",
	"hourglass":              "⌛",
	"hourglass_flowing_sand": "⏳",
	"wrench":                 "🔧",
	"rocket":                 "🚀",
	"no_entry_sign":          "🚫",
	"no_entry":               "⛔",
	"large_blue_circle":      "🔵",
	"grey_question":          "❔",
	"calendar":               "📅",
	"octagonal_sign":         "🛑",
	"double_vertical_bar":    "⏸️",
	"arrow_forward":          "▶️",
	"red_circle":             "🔴",
	"white_circle":           "⚪",
	"information_source":     "ℹ️",
	"checkered_flag":         "🏁",
	"pencil":                 "📝",
	"eyes":                   "👀",
	"tada":                   "🎉",
	"bulb":                   "💡",
	"lock":                   "🔒",
	"+1":                     "👍",
	"thumbsup":               "👍",
}

var (
	shortcode = regexp.MustCompile(`:([a-z0-9_+-]+):`)
	angle     = regexp.MustCompile(`<([^<>]*)>`)
	bold      = regexp.MustCompile(`(^|[\s(\[>"'~_])\*([^*\n]+)\*`)
	italic    = regexp.MustCompile(`(^|[\s(\[>"'~*])_([^_\n]+)_`)
	strike    = regexp.MustCompile(`(^|[\s(\[>"'*_])~([^~\n]+)~`)
	code      = regexp.MustCompile("`([^`\n]+)`")
)

// names resolves Slack IDs to what mentions show.
type names func(id string) string

// plainText renders Slack mrkdwn as plain text, as a reader of the
// transcript would want it: mentions as @name, links as their label,
// emoji as characters, and the *bold*, _italic_, ~strike~ and `code`
// markers dropped.
func plainText(s string, name names) string {
	s = angle.ReplaceAllStringFunc(s, func(m string) string {
		inner := m[1 : len(m)-1]
		target, label, hasLabel := strings.Cut(inner, "|")
		switch {
		case strings.HasPrefix(target, "@"):
			return "@" + name(target[1:])
		case strings.HasPrefix(target, "#"):
			if hasLabel {
				return "#" + label
			}
			return "#" + name(target[1:])
		case strings.HasPrefix(target, "!date^"):
			// Slack shows the date in the reader's time zone; the
			// transcript, like clients that cannot, shows the fallback.
			if hasLabel {
				return label
			}
			return target
		case strings.HasPrefix(target, "!subteam^"):
			if hasLabel {
				return label
			}
			return "@" + strings.TrimPrefix(target, "!subteam^")
		case strings.HasPrefix(target, "!"):
			return "@" + strings.TrimPrefix(target, "!")
		case hasLabel:
			return label
		}
		return target
	})
	s = code.ReplaceAllString(s, "$1")
	s = bold.ReplaceAllString(s, "$1$2")
	s = italic.ReplaceAllString(s, "$1$2")
	s = strike.ReplaceAllString(s, "$1$2")
	s = shortcode.ReplaceAllStringFunc(s, func(m string) string {
		if e, ok := Emoji[m[1:len(m)-1]]; ok {
			return e
		}
		return m
	})
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&").Replace(s)
}

// block is a Block Kit block, as much as the renderers need of it.
type block struct {
	Type      string          `json:"type"`
	Text      *textObj        `json:"text"`
	Fields    []textObj       `json:"fields"`
	Elements  json.RawMessage `json:"elements"`
	Accessory *button         `json:"accessory"`
}

// blocksText renders a message as plain text lines: its blocks, or its
// text when it has none. Buttons show as [Label].
func blocksText(text string, raw json.RawMessage, name names) []string {
	var blocks []block
	if len(raw) == 0 || json.Unmarshal(raw, &blocks) != nil || len(blocks) == 0 {
		return strings.Split(plainText(text, name), "\n")
	}
	var lines []string
	add := func(s string) { lines = append(lines, strings.Split(s, "\n")...) }
	for _, b := range blocks {
		switch b.Type {
		case "section", "header":
			if b.Text != nil {
				add(plainText(b.Text.Text, name))
			}
			for _, f := range b.Fields {
				add(plainText(f.Text, name))
			}
			if b.Accessory != nil && b.Accessory.Type == "button" {
				add("[" + b.Accessory.Text.Text + "]")
			}
		case "context":
			var els []json.RawMessage
			_ = json.Unmarshal(b.Elements, &els)
			var parts []string
			for _, raw := range els {
				var e textObj
				if json.Unmarshal(raw, &e) == nil && e.Text != "" {
					parts = append(parts, plainText(e.Text, name))
				}
			}
			add(strings.Join(parts, " "))
		case "actions":
			var parts []string
			for _, e := range buttons(json.RawMessage(`[{"elements":` + string(b.Elements) + `}]`)) {
				parts = append(parts, "["+e.Text.Text+"]")
			}
			add(strings.Join(parts, "  "))
		case "divider":
			add("────────")
		}
	}
	return lines
}

// Render renders a message (its text, or its blocks when it has any) as
// plain text lines, as the transcript shows messages: mentions resolved by
// name, emoji as characters, links and dates as their labels, buttons as
// [Label]. The README's messages are rendered with it.
func Render(text string, blocks json.RawMessage, name func(id string) string) []string {
	return blocksText(text, blocks, names(name))
}
