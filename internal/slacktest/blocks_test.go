package slacktest_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/slacktest"
)

func TestBlocksText(t *testing.T) {
	t.Parallel()
	plain := func(s string) *slack.TextBlockObject {
		return slack.NewTextBlockObject(slack.PlainTextType, s, false, false)
	}
	md := func(s string) *slack.TextBlockObject {
		return slack.NewTextBlockObject(slack.MarkdownType, s, false, false)
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(plain("Header")),
		slack.NewSectionBlock(md("Section"), []*slack.TextBlockObject{md("F1"), md("F2")},
			slack.NewAccessory(slack.NewButtonBlockElement("a", "v", plain("Accessory")))),
		slack.NewDividerBlock(),
		slack.NewContextBlock("", md("Context")),
		slack.NewActionBlock("", slack.NewButtonBlockElement("ok", "1", plain("Confirm")),
			slack.NewButtonBlockElement("no", "2", plain("Cancel"))),
	}
	raw, err := json.Marshal(blocks)
	if err != nil {
		t.Fatal(err)
	}
	want := "Header\nSection\nF1\nF2\nAccessory\nContext\nConfirm\nCancel"
	if got := slacktest.BlocksText(raw); got != want {
		t.Errorf("BlocksText:\n got %q\nwant %q", got, want)
	}
	if got := slacktest.BlocksText(nil); got != "" {
		t.Errorf("BlocksText(nil): got %q", got)
	}
}

func TestValidateBlocks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		blocks string
		want   string // code, "" for valid
		detail string // part of the first detail
	}{
		{name: "valid", blocks: `[{"type":"section","text":{"type":"mrkdwn","text":"hi"}}]`},
		{name: "not an array", blocks: `{"type":"divider"}`, want: "invalid_blocks_format"},
		{name: "missing type", blocks: `[{"text":{"type":"mrkdwn","text":"hi"}}]`, want: "invalid_blocks", detail: "/blocks/0/type"},
		{name: "unknown type", blocks: `[{"type":"sektion"}]`, want: "invalid_blocks", detail: "unknown block type"},
		{name: "section without text", blocks: `[{"type":"section"}]`, want: "invalid_blocks", detail: "text or fields"},
		{name: "11 fields", blocks: `[{"type":"section","fields":[` + strings.TrimSuffix(strings.Repeat(`{"type":"mrkdwn","text":"f"},`, 11), ",") + `]}]`, want: "invalid_blocks", detail: "/blocks/0/fields"},
		{name: "field 2001", blocks: `[{"type":"section","fields":[{"type":"mrkdwn","text":"` + strings.Repeat("f", 2001) + `"}]}]`, want: "invalid_blocks", detail: "/blocks/0/fields/0/text"},
		{name: "mrkdwn header", blocks: `[{"type":"header","text":{"type":"mrkdwn","text":"h"}}]`, want: "invalid_blocks", detail: "plain_text"},
		{name: "header 151", blocks: `[{"type":"header","text":{"type":"plain_text","text":"` + strings.Repeat("h", 151) + `"}}]`, want: "invalid_blocks", detail: "less than 151"},
		{name: "button label 76", blocks: `[{"type":"actions","elements":[{"type":"button","action_id":"a","text":{"type":"plain_text","text":"` + strings.Repeat("b", 76) + `"}}]}]`, want: "invalid_blocks", detail: "/blocks/0/elements/0/text/text"},
		{name: "duplicate action_id", blocks: `[{"type":"actions","elements":[{"type":"button","action_id":"a","text":{"type":"plain_text","text":"1"}},{"type":"button","action_id":"a","text":{"type":"plain_text","text":"2"}}]}]`, want: "invalid_blocks", detail: "duplicate action_id"},
		{name: "bad style", blocks: `[{"type":"actions","elements":[{"type":"button","action_id":"a","style":"red","text":{"type":"plain_text","text":"1"}}]}]`, want: "invalid_blocks", detail: "style"},
		{name: "confirm text 301", blocks: `[{"type":"actions","elements":[{"type":"button","action_id":"a","text":{"type":"plain_text","text":"1"},"confirm":{"title":{"type":"plain_text","text":"Sure?"},"text":{"type":"mrkdwn","text":"` + strings.Repeat("c", 301) + `"},"confirm":{"type":"plain_text","text":"Yes"},"deny":{"type":"plain_text","text":"No"}}}]}]`, want: "invalid_blocks", detail: "/confirm/text/text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := slacktest.ValidateBlocks(json.RawMessage(tt.blocks))
			var be *slacktest.BlocksError
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got %v, want valid", err)
			case tt.want == "":
			case !errors.As(err, &be) || be.Code != tt.want:
				t.Errorf("got %v, want %s", err, tt.want)
			case !strings.Contains(be.Details[0], tt.detail):
				t.Errorf("first detail: got %q, want it to mention %q", be.Details[0], tt.detail)
			}
		})
	}
}
