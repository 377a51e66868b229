package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store/storetest"
)

// A Sentinel URL in BOT_STORE carries two passwords (the Sentinels' in the
// user information, the data nodes' in password=): neither appears in the
// bot's log, also when the Sentinels cannot be reached and the bot stops.
func TestSentinelPasswordsNotLogged(t *testing.T) {
	_, _, cfg := fakeConfig(t)
	sentinel := fmt.Sprintf("127.0.0.1:%d", storetest.FreePort(t)) // nothing listens there now
	cfg.Store = "redis://:sentinel-Secret-pw@" + sentinel + "/0?master_name=mymaster&addr=" + sentinel + "&password=data-Secret-pw"
	var stdout, stderr syncBuffer // go-redis logs from its own goroutines
	code := run(context.Background(), nil, withConfig(cfg), &stdout, &stderr)
	out := stdout.String() + stderr.String()
	if code != exitFailed {
		t.Errorf("got exit status %d, want %d (the store cannot be opened)\n%s", code, exitFailed, out)
	}
	if strings.Contains(out, "Secret-pw") {
		t.Errorf("the log shows a Sentinel URL's password:\n%s", out)
	}
	if !strings.Contains(out, sentinel) || !strings.Contains(out, "mymaster") {
		t.Errorf("the log does not name the Sentinel %s and the master mymaster:\n%s", sentinel, out)
	}
}
