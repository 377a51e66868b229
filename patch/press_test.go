package patch

import "testing"

// The table of who may press what, case by case (DESIGN.md, "Who may press").
func TestMayPress(t *testing.T) {
	requester := Presser{Requester: true}
	stranger := Presser{}
	approver := Presser{Approver: true, ApprovalsOn: true}
	ownApprover := Presser{Requester: true, Approver: true, ApprovalsOn: true}
	requesterWithApprovals := Presser{Requester: true, ApprovalsOn: true}
	tests := []struct {
		verb Verb
		who  Presser
		want Denial
	}{
		{VerbConfirm, requester, DenyNone},
		{VerbConfirm, stranger, DenyNotRequester},
		{VerbCancel, requester, DenyNone},
		{VerbCancel, approver, DenyNotRequester},
		{VerbApprove, approver, DenyNone},
		{VerbApprove, ownApprover, DenyOwnRequest},
		{VerbApprove, stranger, DenyNoApprovals},
		{VerbApprove, Presser{ApprovalsOn: true}, DenyNotApprover},
		{VerbReject, approver, DenyNone},
		{VerbContinue, requester, DenyNone},
		{VerbContinue, stranger, DenyNotRequester},
		{VerbContinue, requesterWithApprovals, DenyOwnRequest},
		{VerbContinue, approver, DenyNone},
		{VerbStop, requester, DenyNone},
		{VerbStop, approver, DenyNone},
		{VerbStop, stranger, DenyNeither},
		{VerbRetry, stranger, DenyNone},
		{Verb("dance"), requester, DenyNotRequester},
	}
	for _, tt := range tests {
		if got := MayPress(tt.verb, tt.who); got != tt.want {
			t.Errorf("MayPress(%s, %+v) = %q, want %q", tt.verb, tt.who, got, tt.want)
		}
	}
	if NeedsApprover(VerbConfirm, stranger) || !NeedsApprover(VerbStop, stranger) || NeedsApprover(VerbStop, requester) {
		t.Error("NeedsApprover asks for a lookup where the table does not need one, or not where it does")
	}
}
