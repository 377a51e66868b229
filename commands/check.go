package commands

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// checkText looks at the whole text before it is split: size, encoding,
// control characters and Slack's <…> markup (mentions and links, which may
// contain spaces). It returns "" when the text is fine.
func checkText(text string) string {
	if msg := checkPlain(text); msg != "" {
		return msg
	}
	if strings.IndexByte(text, '<') < 0 {
		return ""
	}
	return checkMarkup(text)
}

// checkPlain checks the size, encoding and control characters of text; it
// returns "" when they are fine.
func checkPlain(text string) string {
	if len(text) > MaxTextLen {
		return fmt.Sprintf("That command is %d characters long; I accept at most %d. Split it into several requests.",
			len(text), MaxTextLen)
	}
	if !utf8.ValidString(text) {
		return "The command is not valid UTF-8 text; type it again as plain text."
	}
	for _, r := range text {
		if unicode.IsControl(r) && !isSeparator(r) {
			return fmt.Sprintf("The command contains the control character %U; type it again as plain text.", r)
		}
	}
	return ""
}

// checkMarkup says what the first of Slack's <…> markup in text is, for
// a text that has one.
func checkMarkup(text string) string {
	const plain = " Give instance IDs or names as plain text."
	i := strings.IndexByte(text, '<')
	if i < 0 {
		return "Slack markup is not accepted here." + plain
	}
	rest := text[i+1:]
	switch {
	case strings.HasPrefix(rest, "@"):
		return "That looks like a mention of a person; I patch instances, not people." + plain
	case strings.HasPrefix(rest, "#"):
		return "That looks like a link to a channel, not an instance." + plain
	case strings.HasPrefix(rest, "!"):
		return "That looks like a special mention such as @here or @channel; I never repeat those." + plain
	}
	return "Slack turned part of the command into a link." + plain + " If Slack keeps linking a name, wrap it in backticks."
}

// checkRef validates one instance reference or ID; what names the kind of
// token in the message. It returns "" when ref is fine.
func checkRef(ref, what string) string {
	switch {
	case strings.HasPrefix(ref, "*") && len(ref) > 1 && strings.HasSuffix(ref, "*"):
		return fmt.Sprintf("%s looks like Slack *bold* formatting; send the names as plain text.", show(ref))
	case strings.HasPrefix(ref, "*"):
		return fmt.Sprintf("%s starts with `*`, which the cloud would treat as a fuzzy match; "+
			"I only patch instances named exactly, or matched with `%sGLOB`.", show(ref), prefixName)
	case strings.HasPrefix(ref, "_"):
		return fmt.Sprintf("%s looks like Slack _italic_ formatting; send the names as plain text.", show(ref))
	case strings.HasPrefix(ref, "~"):
		return fmt.Sprintf("%s looks like Slack ~strikethrough~ formatting; send the names as plain text.", show(ref))
	}
	for i, r := range ref {
		ok := r < utf8.RuneSelf && (isAlnum(byte(r)) || (i > 0 && (r == '-' || r == '_')))
		if ok {
			continue
		}
		if i == 0 && (r == '-' || r == '_') {
			return fmt.Sprintf("%s must start with a letter or a digit.", show(ref))
		}
		return fmt.Sprintf("%s contains %s, but %s have only letters, digits, `-` and `_`.", show(ref), showRune(r), what)
	}
	if n := utf8.RuneCountInString(ref); n > maxRefLen {
		return fmt.Sprintf("%s is %d characters long, but %s have at most %d.", show(ref), n, what, maxRefLen)
	}
	return ""
}

// show quotes a user's token for a message: at most maxShown characters,
// without invisible characters, mrkdwn-escaped, in backticks.
func show(tok string) string {
	var b strings.Builder
	n := 0
	for _, r := range tok {
		if !unicode.IsPrint(r) || r == '`' {
			continue
		}
		if n == maxShown {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
		n++
	}
	if b.Len() == 0 {
		return "a word of invisible characters"
	}
	return "`" + escape(b.String()) + "`"
}

// showRune names a character for a message; invisible ones by code point.
func showRune(r rune) string {
	if unicode.IsPrint(r) && r != '`' && r != ' ' {
		return "`" + escape(string(r)) + "`"
	}
	return fmt.Sprintf("the invisible character %U", r)
}
