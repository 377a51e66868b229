package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/demo"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
)

var updateDemo = flag.Bool("update-demo", false, "rewrite the example conversation and the messages of docs/messages.md (and docs/demo.png)")

// messagesDoc is where the example conversation and the rendered messages
// live (the README links it).
const messagesDoc = "docs/messages.md"

// readmeExample is where docs/messages.md keeps the transcript: the fenced
// block after this marker.
const readmeExample = "<!-- the output of: go run . demo --transcript -->"

// The demo needs no environment at all: every test here passes an empty one.

// demo --transcript plays the tour against the real bot and prints it; the
// example conversation of docs/messages.md is exactly that output.
func TestDemoTranscript(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // to see that the demo's store is removed
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errs bytes.Buffer
	start := time.Now()
	if code := run(ctx, []string{"demo", "--transcript"}, noEnv, &out, &errs); code != exitOK {
		t.Fatalf("demo --transcript: exit status %d, stderr:\n%s", code, errs.String())
	}
	t.Logf("demo --transcript took %s", time.Since(start).Round(time.Millisecond))
	got := out.String()
	for _, want := range []string{
		"ana      /geminidb-patch cass-orders-prod-1 cass-orders-prod-2",
		"GeminiDB patch plan r-000000000001",
		"clicks [Patch 2 instances], then [Patch now] in the dialog “Patch GeminiDB instances?”",
		"🔧 @ana is patching 2 GeminiDB instances (2 Cassandra)",
		"— job ", " Completed, took 14s", " Failed, took 21s: ",
		"✅ cass-orders-prod-1 ", ": 3.11.3.2 → 3.11.3.5 (Completed)",
		"has finished.",
		"ana      /geminidb-patch tag:env=staging --dry-run",
		"GeminiDB patch plan r-000000000002 for tag:env=staging",
		"9 matched: 8 to patch (5 Cassandra, 3 Influx) in 2 batch calls, 1 already up to date, 0 blocked.",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("transcript lacks %q; it is:\n%s", want, got)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the demo left %s behind in the temporary directory", left[0].Name())
	}

	readme, err := os.ReadFile(messagesDoc)
	if err != nil {
		t.Fatal(err)
	}
	example, from, to, ok := fencedAfter(string(readme), readmeExample)
	if !ok {
		t.Fatalf("%s has no fenced block after %q", messagesDoc, readmeExample)
	}
	if *updateDemo {
		updated := string(readme[:from]) + got + string(readme[to:])
		if err := os.WriteFile(messagesDoc, []byte(updated), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if example != got {
		t.Errorf("%s's example conversation differs from demo --transcript (go test -run DemoTranscript -update-demo rewrites it):\n--- %s\n%s\n--- demo --transcript\n%s", messagesDoc, messagesDoc, example, got)
	}
}

// fencedAfter finds the fenced code block after marker in s: its content
// and where the content starts and ends.
func fencedAfter(s, marker string) (content string, from, to int, ok bool) {
	i := strings.Index(s, marker)
	if i < 0 {
		return "", 0, 0, false
	}
	open := strings.Index(s[i:], "```")
	if open < 0 {
		return "", 0, 0, false
	}
	nl := strings.Index(s[i+open:], "\n")
	if nl < 0 {
		return "", 0, 0, false
	}
	from = i + open + nl + 1
	// The closing fence is the first line that starts with ``` after it.
	for to = from; to < len(s); {
		if strings.HasPrefix(s[to:], "```") {
			return s[from:to], from, to, true
		}
		next := strings.Index(s[to:], "\n")
		if next < 0 {
			break
		}
		to += next + 1
	}
	return "", 0, 0, false
}

// startDemo runs "demo" with args and returns the page's URL; the demo
// stops (and must stop cleanly) when the test ends.
func startDemo(t *testing.T, args ...string) string {
	t.Helper()
	return startDemoWith(t, func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return run(ctx, append([]string{"demo"}, args...), noEnv, stdout, stderr)
	}, args...)
}

// startDemoOn runs "demo" with args on the clock now (the bot's and the
// fake cloud's) and returns the page's URL, as startDemo.
func startDemoOn(t *testing.T, now func() time.Time, args ...string) string {
	t.Helper()
	return startDemoWith(t, func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return demo.Main(ctx, args, stdout, stderr, func(ctx context.Context, cfg config.Config, logs io.Writer) int {
			return serve(ctx, cfg, logs)
		}, demo.WithClock(now))
	}, args...)
}

// startDemoWith starts the demo with main (given the arguments after
// "demo") and returns the page's URL, as startDemo.
func startDemoWith(t *testing.T, main func(ctx context.Context, args []string, stdout, stderr io.Writer) int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	errs := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- main(ctx, append([]string{"--addr", "127.0.0.1:0"}, args...), pw, errs)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("demo stopped with exit status %d, stderr:\n%s", code, errs.String())
			}
		case <-time.After(20 * time.Second):
			t.Error("demo did not stop within 20s of Ctrl-C")
		}
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := regexp.MustCompile(`http://127\.0\.0\.1:\d+/`).FindString(sc.Text()); m != "" {
				select {
				case urls <- m:
				default:
				}
			}
		}
	}()
	select {
	case u := <-urls:
		return u
	case code := <-done:
		t.Fatalf("demo exited with status %d before serving its page, stderr:\n%s", code, errs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("demo printed no URL within 20s, stderr:\n%s", errs.String())
	}
	return ""
}

// demoAPI talks to the demo page's JSON API as the page does.
type demoAPI struct {
	t    *testing.T
	base string
}

func (a demoAPI) post(path string, body any) {
	a.t.Helper()
	raw, _ := json.Marshal(body)
	res, err := http.Post(a.base+path, "application/json", bytes.NewReader(raw))
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(res.Body)
		a.t.Fatalf("POST %s: %s %s", path, res.Status, msg)
	}
}

// demoMessage is a message of /api/state.
type demoMessage struct {
	Kind    string          `json:"kind"`
	TS      string          `json:"ts"`
	Eph     int             `json:"eph"`
	Text    string          `json:"text"`
	Blocks  json.RawMessage `json:"blocks"`
	Replies []demoMessage   `json:"replies"`
}

// waitFor asks /api/state as user, waiting on its version, until match
// finds a message; it returns that message.
func (a demoAPI) waitFor(user, desc string, match func(demoMessage) bool) demoMessage {
	a.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	version := -1
	var last []demoMessage
	for time.Now().Before(deadline) {
		url := fmt.Sprintf("%sapi/state?user=%s", a.base, user)
		if version >= 0 {
			url += fmt.Sprintf("&since=%d", version)
		}
		res, err := http.Get(url)
		if err != nil {
			a.t.Fatal(err)
		}
		var st struct {
			Version  int           `json:"version"`
			Timeline []demoMessage `json:"timeline"`
		}
		err = json.NewDecoder(res.Body).Decode(&st)
		res.Body.Close()
		if err != nil {
			a.t.Fatal(err)
		}
		version, last = st.Version, st.Timeline
		for _, m := range st.Timeline {
			if match(m) {
				return m
			}
		}
	}
	a.t.Fatalf("%s never saw %s; the channel:\n%+v", user, desc, last)
	return demoMessage{}
}

func allText(m demoMessage) string { return m.Text + "\n" + string(m.Blocks) }

// button returns the value of the button actionID in m, or "".
func (m demoMessage) button(actionID string) string { return buttonValue(m.Blocks, actionID) }

// Over the page's API: approvals on restarts the bot with BOT_APPROVERS;
// the requester cannot approve, a stranger cannot patch, the approver can.
func TestDemoApprovalsAndRefusals(t *testing.T) {
	api := demoAPI{t: t, base: startDemo(t, "--speed", "20")}
	ana, ben, sam := "U01ANA", "U02BEN", "U03SAM"

	api.post("/api/command", map[string]string{"user": sam, "text": "/geminidb-patch list"})
	api.waitFor(sam, "a refusal", func(m demoMessage) bool {
		return m.Kind == "ephemeral" && strings.Contains(allText(m), "You are not allowed")
	})

	api.post("/api/approvals", map[string]bool{"on": true})
	api.post("/api/command", map[string]string{"user": ana, "text": "/geminidb-patch influx-metrics-eu-1"})
	plan := api.waitFor(ana, "the plan", func(m demoMessage) bool { return m.Kind == "ephemeral" && m.button("patch_confirm") != "" })
	if !strings.Contains(allText(plan), "Request approval") {
		t.Fatalf("with approvals on the plan asks for approval; got %s", allText(plan))
	}
	id := plan.button("patch_confirm")
	api.post("/api/click", map[string]any{"user": ana, "target": map[string]int{"eph": plan.Eph}, "action_id": "patch_confirm", "value": id})
	ask := api.waitFor(ben, "the approval request", func(m demoMessage) bool { return m.Kind == "message" && m.button("patch_approve") == id })

	api.post("/api/click", map[string]any{"user": ana, "target": map[string]string{"ts": ask.TS}, "action_id": "patch_approve", "value": id})
	api.waitFor(ana, "the refusal to approve one's own request", func(m demoMessage) bool {
		return m.Kind == "ephemeral" && strings.Contains(allText(m), "cannot approve or reject your own request")
	})
	api.post("/api/click", map[string]any{"user": ben, "target": map[string]string{"ts": ask.TS}, "action_id": "patch_approve", "value": id})
	api.waitFor(ben, "the job completing", func(m demoMessage) bool {
		for _, r := range m.Replies {
			if strings.Contains(allText(r), "Completed, took 12s") {
				return strings.Contains(allText(m), "Approved by")
			}
		}
		return false
	})
}

// manualClock is a clock a test advances.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// The demo's clock is the bot's too: one instance's maintenance window
// opens minutes after the start, and a --wait-for-window request for it is
// sent when the clock gets there, not before.
func TestDemoWindowOpensOnTheDemoClock(t *testing.T) {
	clock := &manualClock{now: time.Now().UTC()}
	api := demoAPI{t: t, base: startDemoOn(t, clock.Now, "--speed", "20")}
	ana := "U01ANA"
	api.post("/api/command", map[string]string{"user": ana, "text": "/geminidb-patch influx-alerts-prod --wait-for-window"})
	plan := api.waitFor(ana, "the plan", func(m demoMessage) bool { return m.Kind == "ephemeral" && m.button("patch_confirm") != "" })
	if !strings.Contains(allText(plan), "influx-alerts-prod") || !strings.Contains(allText(plan), "opens in") {
		t.Fatalf("got plan %s, want influx-alerts-prod scheduled for its window minutes away", allText(plan))
	}
	id := plan.button("patch_confirm")
	api.post("/api/click", map[string]any{"user": ana, "target": map[string]int{"eph": plan.Eph}, "action_id": "patch_confirm", "value": id})
	msg := api.waitFor(ana, "the request's channel message", func(m demoMessage) bool {
		return m.Kind == "message" && strings.Contains(allText(m), id)
	})
	sent := func(m demoMessage) bool {
		for _, r := range m.Replies {
			if strings.Contains(allText(r), "Batch results") {
				return true
			}
		}
		return false
	}
	if sent(msg) {
		t.Fatalf("the wave went out before its window opened: %+v", msg)
	}
	clock.Advance(5 * time.Minute)
	api.waitFor(ana, "the wave sent once the window opened", func(m demoMessage) bool { return m.TS == msg.TS && sent(m) })
	clock.Advance(time.Minute)
	api.waitFor(ana, "the job completing", func(m demoMessage) bool {
		for _, r := range m.Replies {
			if strings.Contains(allText(r), "Completed, took 13s") {
				return m.TS == msg.TS
			}
		}
		return false
	})
}
