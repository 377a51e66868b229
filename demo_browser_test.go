package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "rewrite docs/demo.png from the browser test (-update-demo does too)")

// chromium finds a Chromium to drive: Debian's at /usr/bin/chromium, or
// one on PATH.
func chromium() string {
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// emojiFont is Debian's fonts-noto-color-emoji, which CI installs with
// chromium: with it the page draws the status marks, without it the page
// shows their shortcodes.
const emojiFont = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"

// layout is where the page's parts are, as the browser laid them out.
type layout struct {
	WindowHeight   float64 `json:"windowHeight"`
	ScrollHeight   float64 `json:"scrollHeight"`
	ComposerTop    float64 `json:"composerTop"`
	ComposerBottom float64 `json:"composerBottom"`
	PaneTop        float64 `json:"paneTop"`
	PaneBottom     float64 `json:"paneBottom"`
	LastTop        float64 `json:"lastTop"`
	LastBottom     float64 `json:"lastBottom"`
	Messages       int     `json:"messages"`
}

const layoutJS = `(() => {
	const r = (el) => el.getBoundingClientRect();
	const pane = document.querySelector("#messages");
	const msgs = document.querySelectorAll("#timeline .msg");
	const last = msgs[msgs.length - 1];
	const form = document.querySelector("#composer-form");
	return {
		windowHeight: window.innerHeight,
		scrollHeight: document.documentElement.scrollHeight,
		composerTop: r(form).top, composerBottom: r(form).bottom,
		paneTop: r(pane).top, paneBottom: r(pane).bottom,
		lastTop: last ? r(last).top : 0, lastBottom: last ? r(last).bottom : 0,
		messages: msgs.length,
	};
})()`

// The demo page in a real (headless) browser: type a command, confirm the
// plan through Slack's confirm dialog, open the thread and see a job
// complete; type seven more commands and see the page stay one screen
// with the message box on it and the newest answer in view; open a thread
// from history's permalink and from the App Home tab, on the page. With
// -update-screenshot (or -update-demo) it also saves the screenshot the
// README shows.
func TestDemoPageInBrowser(t *testing.T) {
	path := chromium()
	if path == "" {
		t.Skip("no Chromium found (/usr/bin/chromium or on PATH): apt-get install chromium fonts-noto-color-emoji to run the browser test")
	}
	start := time.Now()
	url := startDemo(t, "--speed", "10")

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	defer cancelTimeout()

	const (
		confirm = `.msg.ephemeral .btn[data-action-id="patch_confirm"]`
		thread  = `#thread-body`
	)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	fail := func(step string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("in the browser, %s: %v", step, err)
		}
	}
	poll := func(step, js string) {
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](js))
		fail(step, err)
	}
	fail("type a command", chromedp.Do(ctx,
		chromedp.EmulateViewport(1400, 900),
		chromedp.Navigate(url),
		chromedp.WaitVisible(css(`#composer`)),
		chromedp.SendKeys(css(`#composer`), "/geminidb-patch cass-orders-prod-1 cass-orders-prod-2 cass-payments-prod influx-legacy-1"+kb.Enter),
		chromedp.WaitVisible(css(confirm)),
	))
	if _, err := os.Stat(emojiFont); err == nil {
		noEmoji, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.body.classList.contains("no-emoji")`))
		fail("see whether emoji are drawn", err)
		if noEmoji {
			t.Errorf("with %s installed the page shows shortcodes, want the emoji drawn", emojiFont)
		}
	} else {
		t.Logf("no emoji font (%s): apt-get install fonts-noto-color-emoji to see the marks", emojiFont)
	}
	// Every mark keeps its shortcode as text for readers and fonts that
	// cannot draw it.
	unnamed, err := chromedp.Run(ctx, chromedp.Evaluate[int](`[...document.querySelectorAll("#timeline .blocks .emoji")].filter((e) => !/^:[a-z0-9_+-]+:$/.test(e.title) || !e.getAttribute("aria-label") || e.dataset.code !== e.title).length`))
	fail("read the emoji", err)
	if unnamed > 0 {
		t.Errorf("%d emoji on the page have no shortcode as title, aria-label and fallback", unnamed)
	}
	// The header shows the demo's clock, which --speed runs fast.
	clock, err := chromedp.Run(ctx, chromedp.Text(css(`#clock`)))
	fail("read the demo's clock", err)
	if !regexp.MustCompile(`^Demo clock \d\d:\d\d UTC \(×10\)\.$`).MatchString(clock) {
		t.Errorf("got clock %q, want the demo's clock and its speed", clock)
	}
	planNote, err := chromedp.Run(ctx, chromedp.Text(css(`.msg.ephemeral .eph-note`)))
	fail("read the plan", err)
	if want := "Only visible to you"; !strings.Contains(planNote, want) {
		t.Errorf("got plan note %q, want %q", planNote, want)
	}
	// The plan's deadline is a Slack date: the page shows its UTC fallback.
	plan, err := chromedp.Run(ctx, chromedp.Text(css(`.msg.ephemeral`)))
	fail("read the plan's text", err)
	if !regexp.MustCompile(`confirmed until 20\d\d-\d\d-\d\d \d\d:\d\d UTC`).MatchString(plan) || strings.Contains(plan, "date^") {
		t.Errorf("got plan %q, want its deadline shown as the date's UTC fallback", plan)
	}
	fail("click Confirm", chromedp.Do(ctx, chromedp.Click(css(confirm)), chromedp.WaitVisible(css(`#dialog-confirm`))))
	dialogTitle, err := chromedp.Run(ctx, chromedp.Text(css(`#dialog-title`)))
	fail("read the dialog", err)
	if dialogTitle != "Patch GeminiDB instances?" {
		t.Errorf("got confirm dialog %q, want the plan's Patch GeminiDB instances?", dialogTitle)
	}
	fail("confirm in the dialog", chromedp.Do(ctx, chromedp.Click(css(`#dialog-confirm`))))
	// The page re-renders the channel as messages arrive, so the replies
	// link found a moment ago may be gone: click whichever is there until
	// the thread opens.
	poll("open the thread", `(() => {
		const t = document.querySelector("#thread-body");
		if (t && t.offsetParent !== null) return true;
		const a = document.querySelector(".replies-link");
		if (a) a.click();
		return false;
	})()`)
	poll("wait for a job to complete in the thread", `document.querySelector("#thread-body").innerText.includes("Completed, took 14s")`)
	poll("wait for the channel message's counts to change", `document.querySelector("#timeline").innerText.includes("completed 1")`)
	poll("wait for the summary", `document.querySelector("#thread-body").innerText.includes("finished:")`)
	if *updateScreenshot || *updateDemo {
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		fail("take the screenshot", err)
		if err := os.WriteFile("docs/demo.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Seven more commands: the page stays one window high, the message
	// box stays on it, and each answer scrolls into view.
	fail("close the thread", chromedp.Do(ctx, chromedp.Click(css(`#thread-close`))))
	for i, cmd := range []string{
		"help", "list", "status", "cass-sessions-prod --dry-run", "influx-metrics-eu-2 --dry-run", "list", "history",
	} {
		before, err := chromedp.Run(ctx, chromedp.Evaluate[layout](layoutJS))
		fail("measure the page", err)
		fail(fmt.Sprintf("type command %d", i+1), chromedp.Do(ctx, chromedp.SendKeys(css(`#composer`), "/geminidb-patch "+cmd+kb.Enter)))
		poll(fmt.Sprintf("wait for the answer to %q", cmd), fmt.Sprintf(`(() => {
			const last = [...document.querySelectorAll("#timeline .msg")].pop();
			return document.querySelectorAll("#timeline .msg").length > %d && !!last && last.innerText.includes(%q) && !last.innerText.includes("is working on it");
		})()`, before.Messages, "/geminidb-patch "+cmd))
		// The answer has rendered; let the pane settle at its end.
		poll("let the channel scroll to its end", `(() => { const p = document.querySelector("#messages"); return p.scrollHeight - p.scrollTop - p.clientHeight < 2; })()`)
		l, err := chromedp.Run(ctx, chromedp.Evaluate[layout](layoutJS))
		fail("measure the page", err)
		if l.ScrollHeight > l.WindowHeight {
			t.Errorf("after %d commands the page is %.0f px tall in a %.0f px window, want it to fit (the panes scroll)", i+2, l.ScrollHeight, l.WindowHeight)
		}
		if l.ComposerTop < 0 || l.ComposerBottom > l.WindowHeight {
			t.Errorf("after %d commands the message box is at %.0f–%.0f px in a %.0f px window, want it on screen", i+2, l.ComposerTop, l.ComposerBottom, l.WindowHeight)
		}
		if l.LastBottom > l.PaneBottom+1 || l.LastBottom < l.PaneTop {
			t.Errorf("after %d commands the newest answer ends at %.0f px, outside the channel pane (%.0f–%.0f px): want it scrolled into view", i+2, l.LastBottom, l.PaneTop, l.PaneBottom)
		}
	}

	// history's thread links open the thread on the page, not Slack's site.
	href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => { const a = [...document.querySelectorAll("#timeline .msg")].pop().querySelector("a[data-thread-link]"); return a ? a.href : ""; })()`))
	fail("find history's thread link", err)
	if !strings.HasPrefix(href, strings.TrimSuffix(url, "/")+"/archives/") {
		t.Fatalf("history's thread link is %q, want a permalink on the page (%sarchives/…)", href, url)
	}
	fail("click history's thread link", chromedp.Do(ctx, chromedp.Click(css(`#timeline .msg:last-child a[data-thread-link]`))))
	poll("see the thread open from history", `document.querySelector("#thread").offsetParent !== null && document.querySelector("#thread-body").innerText.includes("finished:")`)
	poll("see the channel stay at its newest message beside the thread", `(() => { const p = document.querySelector("#messages"); return p.scrollHeight - p.scrollTop - p.clientHeight < 2; })()`)
	loc, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`))
	fail("read the location", err)
	if !strings.HasPrefix(loc, url) {
		t.Errorf("the link left the page for %s", loc)
	}

	// The App Home tab: opening it sends app_home_opened, and the page shows
	// the Home view the bot publishes; its thread links open on the page too.
	fail("open the App Home", chromedp.Do(ctx, chromedp.Click(css(`#side-home`))))
	poll("see the published Home tab", `document.querySelector("#home").offsetParent !== null && !!document.querySelector("#home-body a[data-thread-link]")`)
	home, err := chromedp.Run(ctx, chromedp.Text(css(`#home-body`)))
	fail("read the Home tab", err)
	if !strings.Contains(home, "r-") {
		t.Errorf("the Home tab shows %q, want the request just patched", home)
	}
	fail("click the Home tab's thread link", chromedp.Do(ctx, chromedp.Click(css(`#home-body a[data-thread-link]`))))
	poll("see the thread open from the Home tab", `document.querySelector("#home").offsetParent === null && document.querySelector("#thread").offsetParent !== null`)

	// Opening a permalink in a new tab lands on the page with the thread open.
	fail("open the permalink itself", chromedp.Do(ctx, chromedp.Navigate(href)))
	poll("see the thread open from its permalink", `document.querySelector("#thread").offsetParent !== null && document.querySelector("#thread-body").innerText.includes("finished:")`)
	t.Logf("browser test took %s", time.Since(start).Round(time.Millisecond))
}
