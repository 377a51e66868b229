package bot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// A submission lease belongs to a claim, not to the process: when this
// process takes its own stalled submission over, the stalled goroutine's
// renewals fail, so it stops sending and reporting.
func TestLeaseBelongsToTheClaim(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "bot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	b := New(Config{}, nil, nil, nil, st, zerolog.Nop(), nil)
	if err := st.Create(store.Request{ID: "r-1", State: store.Planned}); err != nil {
		t.Fatal(err)
	}
	old, claim := b.claimFor()
	if _, err := st.Transition("r-1", []store.State{store.Planned}, store.Submitting, "U1", claim); err != nil {
		t.Fatal(err)
	}
	if lost, err := b.renewLease("r-1", old, nil); lost || err != nil {
		t.Fatalf("renewal by the holder: got lost=%v, %v; want false, nil", lost, err)
	}
	// The same process takes the request over with a new claim.
	fresh, claim := b.claimFor()
	if _, err := st.Update("r-1", func(x *store.Request) error { claim(x); return nil }); err != nil {
		t.Fatal(err)
	}
	if lost, err := b.renewLease("r-1", old, nil); !lost || err != nil {
		t.Errorf("renewal by the stalled claim: got lost=%v, %v; want true, nil", lost, err)
	}
	if lost, err := b.renewLease("r-1", fresh, nil); lost || err != nil {
		t.Errorf("renewal by the new claim: got lost=%v, %v; want false, nil", lost, err)
	}
}

// A batch call that failed as a whole is recorded as the cloud's answer,
// as not sent only when it certainly never left the bot, and as unknown
// otherwise.
func TestBatchFailureKinds(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	read := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"cloud error", &upgrade.APIError{Status: 400, Code: "DBS.200011", Message: "not allowed"}, "DBS.200011"},
		{"credentials refused a moment ago", &upgrade.AuthBackoffError{Err: &upgrade.APIError{Status: 401, Code: "APIG.0301"}}, CodeNotSent},
		{"never left the bot", fmt.Errorf("batch upgrade: %w", &upgrade.NotSentError{Err: dial}), CodeNotSent},
		{"IAM login refused", fmt.Errorf("batch upgrade: %w", &upgrade.NotSentError{Err: &upgrade.APIError{Status: 401, Code: "IAM.0001"}}), CodeNotSent},
		{"redirect", &upgrade.RedirectError{Status: 307, Host: "evil.example:443"}, CodeUnknown},
		{"timeout", fmt.Errorf("batch upgrade: %w", context.DeadlineExceeded), CodeUnknown},
		{"connection reset", fmt.Errorf("batch upgrade: %w", read), CodeUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg := batchFailure(tt.err)
			if code != tt.want || msg == "" {
				t.Errorf("got %q %q, want code %q and a message", code, msg, tt.want)
			}
			r := upgrade.UpgradeResult{InstanceID: "i", ErrorCode: code}
			if unknownOutcome(r) != (tt.want == CodeUnknown) {
				t.Errorf("unknownOutcome(%s) = %v", code, unknownOutcome(r))
			}
		})
	}
}
