package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/config"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

func testNames(id string) string {
	switch id {
	case "U01ANA":
		return "ana"
	case "C0DBOPS01":
		return "db-ops"
	}
	return id
}

func TestPlainText(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"bold and code", "*GeminiDB patch plan* `r-1`", "GeminiDB patch plan r-1"},
		{"mention and emoji", ":wrench: <@U01ANA> is patching", "🔧 @ana is patching"},
		{"channel with and without label", "<#C0DBOPS01> <#C9|ops>", "#db-ops #ops"},
		{"links", "<https://example.com|the docs> <https://example.com>", "the docs https://example.com"},
		{"group and here", "<!subteam^S1|@leads> <!here>", "@leads @here"},
		{"escapes", "a &lt;b&gt; &amp; c", "a <b> & c"},
		{"italic and strike", "_slow_ ~gone~", "slow gone"},
		{"underscores inside names stay", "cass-orders-prod-2_node_2", "cass-orders-prod-2_node_2"},
		{"unknown emoji stays", ":not_an_emoji:", ":not_an_emoji:"},
		{"date shows its fallback", "until <!date^1795860900^{date_short_pretty} {time}|2026-11-28 10:15 UTC>.", "until 2026-11-28 10:15 UTC."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := plainText(tt.in, testNames); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBlocksText(t *testing.T) {
	blocks := json.RawMessage(`[
		{"type":"section","text":{"type":"mrkdwn","text":"*Plan*\nline two"},"fields":[{"type":"mrkdwn","text":"f1"}]},
		{"type":"divider"},
		{"type":"context","elements":[{"type":"mrkdwn","text":"small"},{"type":"image","image_url":"x","alt_text":"y"}]},
		{"type":"actions","block_id":"a","elements":[
			{"type":"button","action_id":"patch_confirm","value":"r-1","text":{"type":"plain_text","text":"Patch"},"style":"danger",
			 "confirm":{"title":{"type":"plain_text","text":"Sure?"},"text":{"type":"plain_text","text":"Really"},"confirm":{"type":"plain_text","text":"Yes"},"deny":{"type":"plain_text","text":"No"}}},
			{"type":"button","action_id":"patch_cancel","value":"r-1","text":{"type":"plain_text","text":"Cancel"}}]}
	]`)
	got := strings.Join(blocksText("fallback", blocks, testNames), "\n")
	want := "Plan\nline two\nf1\n────────\nsmall\n[Patch]  [Cancel]"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if got := blocksText("only *text*", nil, testNames); len(got) != 1 || got[0] != "only text" {
		t.Errorf("without blocks got %q, want the text", got)
	}
	b, blockID, ok := findButton(blocks, "patch_confirm", "r-1")
	if !ok || blockID != "a" || b.Confirm.dialog().Confirm != "Yes" || b.Style != "danger" {
		t.Errorf("findButton: got %+v %q %v", b, blockID, ok)
	}
	if _, _, ok := findButton(blocks, "patch_confirm", "r-2"); ok {
		t.Error("findButton found a button with another value")
	}
}

// Every emoji shortcode the bot writes has a character on the page and in
// the transcript.
func TestEmojiCoversTheBot(t *testing.T) {
	files, err := filepath.Glob("../bot/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bot sources: %v", err)
	}
	code := regexp.MustCompile(`:([a-z_]+):`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range code.FindAllStringSubmatch(string(src), -1) {
			if _, ok := Emoji[m[1]]; !ok {
				t.Errorf("%s uses :%s:, which the demo does not render", filepath.Base(f), m[1])
			}
		}
	}
}

// The page's "@ben" reaches the bot as Slack sends a mention with the
// slash command's escaping on.
func TestEscapeMentions(t *testing.T) {
	if got, want := escapeMentions("history @ben"), "history <@U02BEN|ben>"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := escapeMentions("history @nobody x@ben"); got != "history @nobody x@ben" {
		t.Errorf("unknown names and words that only contain @ stay: got %q", got)
	}
}

func TestNormalise(t *testing.T) {
	in := "r-0123456789ab and r-ba9876543210, again r-0123456789ab; " +
		"030a24db9df4ce8ef7ccb6a37bd8d5dain06; window 13:37-17:37 UTC (now 14:37 UTC); until 2027-03-09 23:50"
	got := normalise(in, -(11*time.Hour + 37*time.Minute))
	want := "r-000000000001 and r-000000000002, again r-000000000001; " +
		"030a…in06; window 02:00-06:00 UTC (now 03:00 UTC); until 2026-01-15 12:13"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := normalise("00:10", -time.Hour); got != "23:10" {
		t.Errorf("across midnight: got %s, want 23:10", got)
	}
}

// The fleet is what the page and the README promise.
func TestFleet(t *testing.T) {
	anchor := time.Date(2025, 5, 1, 14, 0, 0, 0, time.UTC)
	now := anchor.Add(30 * time.Minute)
	var noPatch, abnormal, outside, patchable, failing, soon int
	for _, s := range fleet {
		in := s.instance(anchor, now)
		if in.ID != s.instance(anchor.Add(time.Hour), now).ID {
			t.Errorf("%s: its ID changes between runs", s.name)
		}
		inWin := true
		if in.MaintenanceWindow != "" {
			var err error
			if inWin, err = upgrade.InWindow(in.MaintenanceWindow, now); err != nil {
				t.Errorf("%s: %v", s.name, err)
			}
		}
		switch {
		case !in.PatchAvailable:
			noPatch++
		case in.Status != "normal":
			abnormal++
		case !inWin:
			outside++
		default:
			patchable++
		}
		if s.fail != "" {
			failing++
		}
		if s.window == openSoon {
			soon++
			// It opens within soonAfter of the start, not before.
			for _, tt := range []struct {
				at   time.Time
				want bool
			}{{now, false}, {now.Add(soonAfter - time.Minute), false}, {now.Add(soonAfter), true}} {
				if got, _ := upgrade.InWindow(in.MaintenanceWindow, tt.at); got != tt.want {
					t.Errorf("%s (window %s): in its window %s after the start: got %v, want %v", s.name, in.MaintenanceWindow, tt.at.Sub(now), got, tt.want)
				}
			}
		}
		if in.PatchAvailable && in.Status == "normal" && (s.job < 10*time.Second || s.job > 30*time.Second) {
			t.Errorf("%s: job of %s, want 10–30 s", s.name, s.job)
		}
	}
	if noPatch != 1 || abnormal != 1 || outside != 3 || failing != 1 || patchable < 7 || soon != 1 {
		t.Errorf("got %d without patch, %d abnormal, %d outside the window, %d patchable, %d failing, %d opening soon; want 1, 1, 3, 7+, 1, 1",
			noPatch, abnormal, outside, patchable, failing, soon)
	}
}

// newTestWorld is a World whose bot never runs.
func newTestWorld(t *testing.T) *World {
	t.Helper()
	w, err := newWorld(worldOptions{anchor: time.Now(), poll: time.Second}, func(context.Context, config.Config, io.Writer) int { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(w.dir); !os.IsNotExist(err) {
			t.Errorf("the temporary directory is still there: %v", err)
		}
	})
	return w
}

// Without a connected bot, Slack itself answers, as it does when an app
// is down; other input is answered by Slackbot too.
func TestCommandsWithoutTheBot(t *testing.T) {
	w := newTestWorld(t)
	ctx := context.Background()
	for _, line := range []string{"/geminidb-patch list", "/deploy now", "hello"} {
		if err := w.Conv.Command(ctx, Requester.ID, line); err != nil {
			t.Fatal(err)
		}
	}
	v := w.Conv.View(Requester.ID)
	var got []string
	for _, m := range v.Timeline {
		if m.Kind != "ephemeral" || m.User != slackbotID {
			t.Errorf("got %+v, want ephemeral answers from Slackbot", m)
		}
		got = append(got, m.Text)
	}
	if len(got) != 3 || !strings.Contains(got[0], "dispatch_failed") || !strings.Contains(got[1], "`/deploy` is not a valid command") || !strings.Contains(got[2], "only the app's slash command") {
		t.Errorf("got answers %q", got)
	}
	if other := w.Conv.View(Approver.ID); len(other.Timeline) != 0 {
		t.Errorf("another person sees %+v, want nothing: the answers are ephemeral", other.Timeline)
	}
	if err := w.Conv.Click(ctx, Requester.ID, Target{Eph: 1}, "patch_confirm", "r-1"); err != ErrNoButton {
		t.Errorf("clicking a button that is not there: got %v, want ErrNoButton", err)
	}
}

func TestHandler(t *testing.T) {
	w := newTestWorld(t)
	srv := httptest.NewUnstartedServer(nil)
	srv.Config.Handler = newHandler(w, portOf(t, srv.Listener.Addr().String()))
	srv.Start()
	defer srv.Close()

	res, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !bytes.Contains(page, []byte("<title>")) {
		t.Errorf("GET /: got %s, want the page", res.Status)
	}

	var meta struct {
		People []Person          `json:"people"`
		Emoji  map[string]string `json:"emoji"`
	}
	res, err = http.Get(srv.URL + "/api/meta")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(res.Body).Decode(&meta)
	res.Body.Close()
	if len(meta.People) != 3 || meta.Emoji["wrench"] == "" {
		t.Errorf("GET /api/meta: got %+v", meta)
	}

	post := func(path, origin, body string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	tests := []struct {
		name, path, origin, body string
		want                     int
	}{
		{"same origin", "/api/command", srv.URL, `{"user":"U01ANA","text":"hello"}`, http.StatusOK},
		{"another site", "/api/command", "https://evil.example", `{"user":"U01ANA","text":"hello"}`, http.StatusForbidden},
		{"unknown person", "/api/command", "", `{"user":"UNOBODY","text":"hello"}`, http.StatusBadRequest},
		{"bad body", "/api/command", "", `{`, http.StatusBadRequest},
		{"no such button", "/api/click", "", `{"user":"U01ANA","target":{"ts":"1.2"},"action_id":"patch_confirm","value":"r"}`, http.StatusConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := post(tt.path, tt.origin, tt.body); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
	res, err = http.Get(srv.URL + "/api/state?user=UNOBODY")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("state of an unknown person: got %s, want 400", res.Status)
	}
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// DNS rebinding: a page of attacker.example whose name the attacker points
// at 127.0.0.1 reaches the demo with its own name in Host and Origin. Every
// route refuses it; the page's own names with its port are answered.
func TestHandlerRefusesOtherHosts(t *testing.T) {
	w := newTestWorld(t)
	srv := httptest.NewUnstartedServer(nil)
	port := portOf(t, srv.Listener.Addr().String())
	srv.Config.Handler = newHandler(w, port)
	srv.Start()
	defer srv.Close()

	routes := []struct{ method, path, body string }{
		{"GET", "/", ""},
		{"GET", "/archives/C0DBOPS01/p1700000000000100", ""},
		{"GET", "/api/meta", ""},
		{"GET", "/api/state?user=U01ANA", ""},
		{"POST", "/api/command", `{"user":"U01ANA","text":"hello"}`},
		{"POST", "/api/click", `{"user":"U01ANA","target":{"ts":"1.2"},"action_id":"patch_confirm","value":"r"}`},
		{"POST", "/api/home", `{"user":"U01ANA"}`},
		{"POST", "/api/approvals", `{"on":false}`},
		{"GET", "/no/such/route", ""},
	}
	do := func(method, path, body, host, origin string) int {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	refused := func(code int) bool { return code == http.StatusForbidden || code == http.StatusMisdirectedRequest }
	for _, r := range routes {
		for _, bad := range []struct{ host, origin string }{
			{"attacker.example:" + port, "http://attacker.example:" + port}, // DNS rebinding
			{"attacker.example:" + port, ""},                                // the same, without Origin
			{"attacker.example", "http://attacker.example"},                 // another port
			{"127.0.0.1:1", ""},                                             // another port of loopback
			{"127.0.0.1:" + port, "http://attacker.example:" + port},        // another site's page posting here
			{"127.0.0.1:" + port, "https://127.0.0.1:" + port},              // another scheme
			{"localhost:" + port, "http://127.0.0.1:" + port},               // another origin, though the same machine
			{"127.0.0.1:" + port, "null"},                                   // a sandboxed frame
		} {
			if got := do(r.method, r.path, r.body, bad.host, bad.origin); !refused(got) {
				t.Errorf("%s %s with Host %q, Origin %q: got %d, want 403 or 421", r.method, r.path, bad.host, bad.origin, got)
			}
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "[::1]:" + port, "LOCALHOST:" + port} {
		for _, origin := range []string{"", "http://" + host} {
			if got := do("GET", "/api/meta", "", host, origin); got != http.StatusOK {
				t.Errorf("GET /api/meta with Host %q, Origin %q: got %d, want 200", host, origin, got)
			}
		}
	}
}

// A permalink the bot posted opens its thread on the page.
func TestPermalinkOpensThePage(t *testing.T) {
	w := newTestWorld(t)
	srv := httptest.NewUnstartedServer(nil)
	srv.Config.Handler = newHandler(w, portOf(t, srv.Listener.Addr().String()))
	srv.Start()
	defer srv.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tt := range []struct{ path, want string }{
		{"/archives/C0DBOPS01/p1700000000000100", "/#thread=1700000000.000100"},
		{"/archives/C0DBOPS01/p1700000000000100?thread_ts=1700000000.000050&cid=C0DBOPS01", "/#thread=1700000000.000050"},
		{"/archives/C0DBOPS01/p1700000000000100?thread_ts=javascript:alert(1)", "/#thread=1700000000.000100"},
		{"/archives/C0OTHER/p1700000000000100", ""},
		{"/archives/C0DBOPS01/p17", ""},
	} {
		res, err := client.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if got := res.Header.Get("Location"); got != tt.want || (tt.want == "" && res.StatusCode != http.StatusNotFound) {
			t.Errorf("GET %s: got %d to %q, want %q", tt.path, res.StatusCode, got, tt.want)
		}
	}
}

// fastClock runs speed times faster than the clock it is built on.
func TestFastClock(t *testing.T) {
	real := time.Date(2026, 1, 15, 3, 0, 0, 0, time.UTC)
	clock := fastClock(10, func() time.Time { return real })
	if got := clock(); !got.Equal(real) {
		t.Errorf("at the start got %s, want %s", got, real)
	}
	real = real.Add(3 * time.Second)
	if got, want := clock(), real.Add(27*time.Second); !got.Equal(want) {
		t.Errorf("3 s later got %s, want %s (30 s on)", got, want)
	}
}
