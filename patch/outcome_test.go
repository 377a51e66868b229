package patch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// A batch call that failed as a whole is recorded as the cloud's answer,
// as not sent only when it certainly never left the bot, and as unknown
// otherwise.
func TestClassify(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	read := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"cloud error", &upgrade.APIError{Status: 400, Code: "DBS.200011", Message: "not allowed"}, "DBS.200011"},
		{"backend timeout at the gateway", &upgrade.APIError{Status: 504, Code: "APIG.0201", Message: "Backend timeout."}, CodeUnknown},
		{"server error with the cloud's code", &upgrade.APIError{Status: 500, Code: "DBS.200998", Message: "Internal error."}, CodeUnknown},
		{"bad gateway without a code", &upgrade.APIError{Status: 502}, CodeUnknown},
		{"gateway code at a 4xx", &upgrade.APIError{Status: 400, Code: "APIG.0201", Message: "Backend timeout."}, CodeUnknown},
		{"credentials refused a moment ago", &upgrade.AuthBackoffError{Err: &upgrade.APIError{Status: 401, Code: "APIG.0301"}}, CodeNotSent},
		{"never left the bot", fmt.Errorf("batch upgrade: %w", &upgrade.NotSentError{Err: dial}), CodeNotSent},
		{"IAM login refused", fmt.Errorf("batch upgrade: %w", &upgrade.NotSentError{Err: &upgrade.APIError{Status: 401, Code: "IAM.0001"}}), CodeNotSent},
		{"redirect", &upgrade.RedirectError{Status: 307, Host: "evil.example:443"}, CodeUnknown},
		{"timeout", fmt.Errorf("batch upgrade: %w", context.DeadlineExceeded), CodeUnknown},
		{"connection reset", fmt.Errorf("batch upgrade: %w", read), CodeUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg := Classify(tt.err)
			if code != tt.want || msg == "" {
				t.Errorf("got %q %q, want code %q and a message", code, msg, tt.want)
			}
			r := upgrade.UpgradeResult{InstanceID: "i", ErrorCode: code}
			if UnknownOutcome(r) != (tt.want == CodeUnknown) {
				t.Errorf("UnknownOutcome(%s) = %v", code, UnknownOutcome(r))
			}
		})
	}
}
