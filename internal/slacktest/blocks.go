package slacktest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Slack's documented message and Block Kit limits, in characters.
const (
	maxTextLen         = 40000 // text of a message
	maxBlocks          = 50    // blocks in a message
	maxViewBlocks      = 100   // blocks in a view (Home tab, modal)
	maxPrivateMetadata = 3000  // a view's private_metadata
	maxSectionText     = 3000  // section text, context text elements
	maxFields          = 10    // fields in a section
	maxFieldText       = 2000  // each section field
	maxHeaderText      = 150   // header text
	maxContextElements = 10    // elements in a context block
	maxActionsElements = 25    // elements in an actions block
	maxButtonText      = 75    // button label
	maxButtonValue     = 2000  // button value
	maxID              = 255   // block_id, action_id
	maxURL             = 3000  // button url
	maxConfirmTitle    = 100   // confirm dialog title
	maxConfirmText     = 300   // confirm dialog text
	maxConfirmButton   = 30    // confirm dialog confirm/deny labels
)

// knownBlocks are the block types Slack accepts in messages.
var knownBlocks = map[string]bool{
	"section": true, "divider": true, "image": true, "actions": true, "context": true,
	"input": true, "file": true, "header": true, "video": true, "rich_text": true,
	"markdown": true, "table": true, "context_actions": true,
}

// BlocksError is how Slack rejects blocks: an error code (invalid_blocks or
// invalid_blocks_format) and one detail per problem, in Slack's wording, e.g.
// "[ERROR] must be less than 3001 characters [json-pointer:/blocks/0/text/text]".
type BlocksError struct {
	Code    string
	Details []string
}

// Error returns the code and the details.
func (e *BlocksError) Error() string {
	return e.Code + ": " + strings.Join(e.Details, "; ")
}

// ValidateBlocks checks a message's blocks (a JSON array) against the Block Kit
// limits Slack enforces: at most 50 blocks, section and context text up to 3000
// characters, at most 10 section fields of up to 2000, header text up to 150,
// button labels up to 75 and values up to 2000, unique block_ids, non-empty text,
// known block types. It returns nil or a *BlocksError. The Server applies it to
// every message it receives; bots can also call it on their Block Kit builders.
func ValidateBlocks(blocks json.RawMessage) error {
	var list []any
	dec := json.NewDecoder(bytes.NewReader(blocks))
	dec.UseNumber()
	if err := dec.Decode(&list); err != nil {
		return &BlocksError{Code: "invalid_blocks_format", Details: []string{"[ERROR] blocks must be a JSON array: " + err.Error()}}
	}
	v := &validator{}
	v.blocks("/blocks", list, maxBlocks)
	if len(v.details) > 0 {
		return &BlocksError{Code: "invalid_blocks", Details: v.details}
	}
	return nil
}

// ValidateView checks a view that views.publish would publish (a JSON
// object) as Slack does: type "home", at most 100 blocks, each within the
// Block Kit limits ValidateBlocks checks, private_metadata up to 3000
// characters, callback_id and external_id up to 255. It returns nil or a
// *BlocksError whose Code is Slack's invalid_arguments.
func ValidateView(view json.RawMessage) error {
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(view))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return &BlocksError{Code: "invalid_arguments", Details: []string{"[ERROR] view must be a JSON object [json-pointer:/view]"}}
	}
	v := &validator{}
	if t, _ := obj["type"].(string); t != "home" {
		v.errorf("/view/type", "must be home for views.publish")
	}
	list, isList := obj["blocks"].([]any)
	if !isList {
		v.errorf("/view/blocks", "must be an array")
	}
	v.blocks("/view/blocks", list, maxViewBlocks)
	v.maxLen("/view/private_metadata", obj["private_metadata"], maxPrivateMetadata)
	v.maxLen("/view/callback_id", obj["callback_id"], maxID)
	v.maxLen("/view/external_id", obj["external_id"], maxID)
	if len(v.details) > 0 {
		return &BlocksError{Code: "invalid_arguments", Details: v.details}
	}
	return nil
}

// blocks checks a list of blocks at path, of which max are allowed.
func (v *validator) blocks(at string, list []any, max int) {
	if len(list) > max {
		v.errorf(at, "no more than %d items allowed", max)
	}
	blockIDs := map[string]bool{}
	for i, b := range list {
		path := fmt.Sprintf("%s/%d", at, i)
		obj, isObj := b.(map[string]any)
		if !isObj {
			v.errorf(path, "must be an object")
			continue
		}
		if id, _ := obj["block_id"].(string); id != "" {
			if utf8.RuneCountInString(id) > maxID {
				v.errorf(path+"/block_id", "must be less than %d characters", maxID+1)
			}
			if blockIDs[id] {
				v.errorf(path+"/block_id", "duplicate block_id %q", id)
			}
			blockIDs[id] = true
		}
		v.block(path, obj)
	}
}

// validator collects problems in Slack's wording.
type validator struct{ details []string }

func (v *validator) errorf(path, format string, args ...any) {
	v.details = append(v.details, fmt.Sprintf("[ERROR] %s [json-pointer:%s]", fmt.Sprintf(format, args...), path))
}

func (v *validator) block(path string, obj map[string]any) {
	typ, _ := obj["type"].(string)
	switch typ {
	case "section":
		text, hasText := obj["text"]
		fields, hasFields := obj["fields"]
		if !hasText && !hasFields {
			v.errorf(path, "must provide text or fields")
		}
		if hasText {
			v.text(path+"/text", text, maxSectionText, false)
		}
		if hasFields {
			list, _ := fields.([]any)
			if len(list) > maxFields {
				v.errorf(path+"/fields", "no more than %d items allowed", maxFields)
			}
			for i, f := range list {
				v.text(fmt.Sprintf("%s/fields/%d", path, i), f, maxFieldText, false)
			}
		}
		if acc, has := obj["accessory"]; has {
			v.element(path+"/accessory", acc)
		}
	case "header":
		v.text(path+"/text", obj["text"], maxHeaderText, true)
	case "context":
		list, _ := obj["elements"].([]any)
		if len(list) == 0 {
			v.errorf(path+"/elements", "must provide at least 1 item")
		}
		if len(list) > maxContextElements {
			v.errorf(path+"/elements", "no more than %d items allowed", maxContextElements)
		}
		for i, el := range list {
			p := fmt.Sprintf("%s/elements/%d", path, i)
			m, _ := el.(map[string]any)
			switch t, _ := m["type"].(string); t {
			case "plain_text", "mrkdwn":
				v.text(p, el, maxSectionText, false)
			case "image":
			default:
				v.errorf(p+"/type", "must be plain_text, mrkdwn or image")
			}
		}
	case "actions":
		list, _ := obj["elements"].([]any)
		if len(list) == 0 {
			v.errorf(path+"/elements", "must provide at least 1 item")
		}
		if len(list) > maxActionsElements {
			v.errorf(path+"/elements", "no more than %d items allowed", maxActionsElements)
		}
		actionIDs := map[string]bool{}
		for i, el := range list {
			p := fmt.Sprintf("%s/elements/%d", path, i)
			v.element(p, el)
			m, _ := el.(map[string]any)
			if id, _ := m["action_id"].(string); id != "" {
				if actionIDs[id] {
					v.errorf(p+"/action_id", "duplicate action_id %q", id)
				}
				actionIDs[id] = true
			}
		}
	case "":
		v.errorf(path+"/type", "missing required field: type")
	default:
		if !knownBlocks[typ] {
			v.errorf(path+"/type", "unknown block type %q", typ)
		}
	}
}

// element checks an interactive element; buttons in full, others' action_id only.
func (v *validator) element(path string, el any) {
	m, isObj := el.(map[string]any)
	if !isObj {
		v.errorf(path, "must be an object")
		return
	}
	v.maxLen(path+"/action_id", m["action_id"], maxID)
	if t, _ := m["type"].(string); t != "button" {
		return
	}
	v.text(path+"/text", m["text"], maxButtonText, true)
	v.maxLen(path+"/value", m["value"], maxButtonValue)
	v.maxLen(path+"/url", m["url"], maxURL)
	if style, _ := m["style"].(string); style != "" && style != "primary" && style != "danger" {
		v.errorf(path+"/style", "must be one of primary, danger")
	}
	if c, has := m["confirm"]; has {
		cm, _ := c.(map[string]any)
		v.text(path+"/confirm/title", cm["title"], maxConfirmTitle, true)
		v.text(path+"/confirm/text", cm["text"], maxConfirmText, false)
		v.text(path+"/confirm/confirm", cm["confirm"], maxConfirmButton, true)
		v.text(path+"/confirm/deny", cm["deny"], maxConfirmButton, true)
	}
}

// text checks a text object: its type, and 1 to max characters of text.
func (v *validator) text(path string, obj any, max int, plainOnly bool) {
	m, isObj := obj.(map[string]any)
	if !isObj {
		v.errorf(path, "must be a text object")
		return
	}
	switch t, _ := m["type"].(string); {
	case t == "plain_text":
	case t == "mrkdwn" && !plainOnly:
	case plainOnly:
		v.errorf(path+"/type", "must be plain_text")
	default:
		v.errorf(path+"/type", "must be plain_text or mrkdwn")
	}
	s, _ := m["text"].(string)
	if s == "" {
		v.errorf(path+"/text", "must be more than 0 characters")
	}
	v.maxLen(path+"/text", s, max)
}

func (v *validator) maxLen(path string, s any, max int) {
	if str, _ := s.(string); utf8.RuneCountInString(str) > max {
		v.errorf(path, "must be less than %d characters", max+1)
	}
}

func runeCount(s string) int { return utf8.RuneCountInString(s) }

// BlocksText returns all text in blocks (a JSON array), one piece per line, in
// document order: section text and fields, headers, context elements, button
// labels, confirm dialogs, rich text. Tests assert on it instead of on JSON. It
// returns what it found before any malformed JSON.
func BlocksText(blocks json.RawMessage) string {
	if len(blocks) == 0 {
		return ""
	}
	var parts []string
	walkText(blocks, func(t string) { parts = append(parts, t) })
	return strings.Join(parts, "\n")
}

// walkText calls fn with every non-empty string field named "text" in
// blocks, in document order, up to any malformed JSON.
func walkText(blocks json.RawMessage, fn func(string)) {
	dec := json.NewDecoder(bytes.NewReader(blocks))
	// Every Block Kit text lives in a string field named "text"; walking the
	// tokens keeps document order, which decoding into maps would lose.
	var stack []bool // per open container: is it an object?
	expectKey := false
	key := ""
	for {
		tok, err := dec.Token()
		if err != nil { // io.EOF or malformed JSON: keep what was found
			break
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
				key = t
				expectKey = false
				continue
			}
			if inObject && key == "text" && t != "" {
				fn(t)
			}
		}
		// A value ended; inside an object the next token is a key.
		expectKey = len(stack) > 0 && stack[len(stack)-1]
	}
}

// BlocksTextLen is how many characters of text blocks (a JSON array) hold in
// all: the sum over every text BlocksText finds, which is what Slack's
// msg_blocks_too_long limit counts (see Limits.BlockText).
func BlocksTextLen(blocks json.RawMessage) int {
	n := 0
	walkText(blocks, func(t string) { n += utf8.RuneCountInString(t) })
	return n
}
