package patch

// Verb is a decision a person presses a button for.
type Verb string

// The verbs of the buttons (their action_ids are the bot's business).
const (
	VerbConfirm  Verb = "confirm"
	VerbCancel   Verb = "cancel"
	VerbApprove  Verb = "approve"
	VerbReject   Verb = "reject"
	VerbContinue Verb = "continue"
	VerbStop     Verb = "stop"
	VerbRetry    Verb = "retry"
)

// Presser is what decides whether someone may press a button of a
// request: who they are to it and to its target.
type Presser struct {
	Requester   bool // they asked for the request
	Approver    bool // they are one of its target's approvers
	ApprovalsOn bool // its target has approvers
}

// Denial is why someone may not press a button; DenyNone lets them.
type Denial string

// The denials of the table.
const (
	DenyNone Denial = ""
	// DenyNotRequester: only the requester may press it.
	DenyNotRequester Denial = "not the requester"
	// DenyNoApprovals: the target has no approvers to decide.
	DenyNoApprovals Denial = "approval not configured"
	// DenyOwnRequest: an approver must decide, and the requester is not
	// one for their own request.
	DenyOwnRequest Denial = "requester cannot approve own request"
	// DenyNotApprover: only an approver may press it.
	DenyNotApprover Denial = "not an approver"
	// DenyNeither: only the requester or an approver may press it.
	DenyNeither Denial = "neither the requester nor an approver"
)

// rule says who may press one verb.
type rule func(p Presser) Denial

// approverNotRequester: an approver who is not the requester.
func approverNotRequester(p Presser) Denial {
	switch {
	case !p.ApprovalsOn:
		return DenyNoApprovals
	case p.Requester:
		return DenyOwnRequest
	case !p.Approver:
		return DenyNotApprover
	}
	return DenyNone
}

// requesterOnly: the requester.
func requesterOnly(p Presser) Denial {
	if !p.Requester {
		return DenyNotRequester
	}
	return DenyNone
}

// presses is who may press what (DESIGN.md, "Who may press"): Confirm and
// Cancel the requester; Approve and Reject an approver who is not the
// requester; Continue as Confirm (an approver, not the requester, when
// approvals are on); Stop the requester or an approver; Retry anyone
// allowed to use the bot (who becomes the new request's requester).
// Being allowed to use the bot at all, in that channel, is checked before.
var presses = map[Verb]rule{
	VerbConfirm: requesterOnly,
	VerbCancel:  requesterOnly,
	VerbApprove: approverNotRequester,
	VerbReject:  approverNotRequester,
	VerbContinue: func(p Presser) Denial {
		if p.ApprovalsOn {
			return approverNotRequester(p)
		}
		return requesterOnly(p)
	},
	VerbStop: func(p Presser) Denial {
		if !p.Requester && !p.Approver {
			return DenyNeither
		}
		return DenyNone
	},
	VerbRetry: func(Presser) Denial { return DenyNone },
}

// MayPress tells whether p may press v, and if not, why. An unknown verb
// is denied.
func MayPress(v Verb, p Presser) Denial {
	r, ok := presses[v]
	if !ok {
		return DenyNotRequester
	}
	return r(p)
}

// NeedsApprover tells whether MayPress(v, p) depends on p.Approver, so the
// caller looks the approvers up (a Slack call for user groups) only then.
func NeedsApprover(v Verb, p Presser) bool {
	switch v {
	case VerbApprove, VerbReject:
		return p.ApprovalsOn && !p.Requester
	case VerbContinue:
		return p.ApprovalsOn && !p.Requester
	case VerbStop:
		return !p.Requester
	}
	return false
}
