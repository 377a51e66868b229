package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

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

// The demo page in a real (headless) browser: type a command, confirm the
// plan through Slack's confirm dialog, open the thread and see a job
// complete. With -update-demo it also saves the screenshot the README shows.
func TestDemoPageInBrowser(t *testing.T) {
	path := chromium()
	if path == "" {
		t.Skip("no Chromium found (/usr/bin/chromium or on PATH): apt-get install chromium to run the browser test")
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
		chromedp.WindowSize(1400, 860),
	)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 30*time.Second)
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
	fail("type a command", chromedp.Do(ctx,
		chromedp.EmulateViewport(1400, 900),
		chromedp.Navigate(url),
		chromedp.WaitVisible(css(`#composer`)),
		chromedp.SendKeys(css(`#composer`), "/geminidb-patch cass-orders-prod-1 cass-orders-prod-2 cass-payments-prod influx-legacy-1"+kb.Enter),
		chromedp.WaitVisible(css(confirm)),
	))
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
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`(() => {
		const t = document.querySelector("#thread-body");
		if (t && t.offsetParent !== null) return true;
		const a = document.querySelector(".replies-link");
		if (a) a.click();
		return false;
	})()`))
	fail("open the thread", err)
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#thread-body").innerText.includes("Completed, took 14s")`))
	fail("wait for a job to complete in the thread", err)
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#timeline").innerText.includes("completed 1")`))
	fail("wait for the channel message's counts to change", err)
	if *updateDemo {
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#thread-body").innerText.includes("finished:")`))
		fail("wait for the summary", err)
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		fail("take the screenshot", err)
		if err := os.WriteFile("docs/demo.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("browser test took %s", time.Since(start).Round(time.Millisecond))
}
