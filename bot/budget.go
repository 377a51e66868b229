package bot

// The one rule every message the bot builds keeps: Slack refuses a message
// over 50 blocks (invalid_blocks), a text object over 3,000 characters
// (invalid_blocks) and, undocumented, a message whose blocks hold more than
// about 12,000 characters of text in all (msg_blocks_too_long, seen from
// 11,341). The builders size their lists to stay within budget; fit is the
// last check on the way out, so a message is within it by construction.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/slack-go/slack"
)

// The budget of one message.
const (
	maxBlocks      = 50    // blocks in one message
	maxTextObject  = 3000  // characters in one text object
	maxMessageText = 10000 // characters of text in all of a message's blocks
	// partText is what one part of a long report (thread reply) holds of
	// its list, leaving room for a target label, a retry button and a
	// footer within maxMessageText.
	partText = 8000
	// partBlocks is what one part holds of its list's sections.
	partBlocks = 40
	// shortText is the budget of a message Slack refused for its content:
	// it is posted again this much shorter, never unchanged.
	shortText = 4000
)

// shorter is the budget of a message Slack refused for its content: at
// most shortText and half of what it held, so it is never posted unchanged.
func shorter(blocks []slack.Block) int {
	return max(min(shortText, textLen(blocks)/2), 100)
}

// refusedForContent tells whether Slack refused a message for what it
// holds (too long, too many blocks, a text over its limit), not for where
// or when it was sent.
func refusedForContent(err error) bool {
	if err == nil {
		return false
	}
	switch slackErrorCode(err) {
	case "msg_blocks_too_long", "invalid_blocks", "msg_too_long", "too_many_attachments":
		return true
	}
	return false
}

// textLen is how many characters of text blocks hold in all, counted as
// Slack counts for msg_blocks_too_long: every string named "text", at any
// depth (sections, fields, context elements, buttons, confirm dialogs).
func textLen(blocks []slack.Block) int {
	raw, err := json.Marshal(blocks)
	if err != nil {
		return 0
	}
	n := 0
	dec := json.NewDecoder(bytes.NewReader(raw))
	var stack []bool // per open container: is it an object?
	expectKey, key := false, ""
	for {
		tok, err := dec.Token()
		if err != nil {
			return n
		}
		inObject := len(stack) > 0 && stack[len(stack)-1]
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, true)
				expectKey = true
				continue
			case '[':
				stack = append(stack, false)
				continue
			default:
				stack = stack[:len(stack)-1]
			}
		case string:
			if inObject && expectKey {
				key, expectKey = t, false
				continue
			}
			if inObject && key == "text" {
				n += utf8.RuneCountInString(t)
			}
		}
		expectKey = len(stack) > 0 && stack[len(stack)-1]
	}
}

// fits tells whether blocks are within the budget of one message (at most
// chars characters of text in all).
func fits(blocks []slack.Block, chars int) bool {
	return len(blocks) <= maxBlocks && textLen(blocks) <= chars
}

// fit returns blocks within the budget of one message: at most maxBlocks
// blocks and chars characters of text. What does not fit is dropped from
// the end of the message's sections (buttons and their context are kept)
// and a last line says so, with more (e.g. where to read all of it). The
// builders stay within budget themselves; fit only guards the way out, and
// shortens a message Slack refused for its content.
func fit(blocks []slack.Block, chars int, more string) []slack.Block {
	if fits(blocks, chars) {
		return blocks
	}
	// Keep the actions and the context blocks after the last section.
	cut := len(blocks)
	for cut > 0 {
		if _, ok := blocks[cut-1].(*slack.SectionBlock); ok {
			break
		}
		cut--
	}
	head := append([]slack.Block(nil), blocks[:cut]...)
	tail := blocks[cut:]
	note := contextBlock(truncate("… shortened to fit Slack's limits"+more, maxSectionChars))
	for len(head) > 1 {
		try := append(append(append([]slack.Block(nil), head...), note), tail...)
		if fits(try, chars) {
			return try
		}
		head = head[:len(head)-1]
	}
	// One section left: shorten its text.
	out := append(append([]slack.Block(nil), head...), note)
	out = append(out, tail...)
	if len(out) > maxBlocks {
		out = append(out[:maxBlocks-1], note)
	}
	for i := 0; i < 8 && !fits(out, chars) && len(head) == 1; i++ {
		if s, ok := head[0].(*slack.SectionBlock); ok && s.Text != nil {
			over := textLen(out) - chars
			keep := len(s.Text.Text) - over - 16
			if keep < 16 {
				keep = 16
			}
			head[0] = section(truncate(s.Text.Text, keep))
			out[0] = head[0]
		} else {
			break
		}
	}
	if !fits(out, chars) {
		return []slack.Block{section(fmt.Sprintf("This message did not fit Slack's limits%s", truncate(more, 500)))}
	}
	return out
}
