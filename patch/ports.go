package patch

import (
	"context"
	"time"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// The ports of the engine: what it needs of the store, of the cloud and of
// whoever speaks to people for it. Each is declared here, where it is used;
// store.Bolt and store.Redis, upgrade.Client and the bot's Slack side
// implement them.

// Engine is what the Runner needs of a store, beyond a Lifecycle's Store:
// the requests and jobs that are due (and, once at start, every open
// request), recording jobs and deleting what is older than the retention.
type Engine interface {
	Store
	List(ctx context.Context, states ...store.State) ([]store.Request, error)
	Due(ctx context.Context, now time.Time, max int) ([]store.Request, error)
	DueJobs(ctx context.Context, now time.Time, max int) ([]store.Job, error)
	PutJob(ctx context.Context, j store.Job) error
	Prune(ctx context.Context, before time.Time, max int) (int, error)
}

var (
	_ Engine = (*store.Bolt)(nil)
	_ Engine = (*store.Redis)(nil)
)

// Cloud is what the engine needs of one target's GeminiDB API
// (upgrade.Client has it): the re-check of a wave's instances right before
// they are sent, the batch call, and the read of a job.
type Cloud interface {
	Resolve(ctx context.Context, refs []string) (upgrade.Resolution, error)
	BatchUpgrade(ctx context.Context, ids []string) ([]upgrade.UpgradeResult, error)
	Job(ctx context.Context, id string) (upgrade.Job, error)
}

var _ Cloud = (*upgrade.Client)(nil)

// Site is a GeminiDB target as the engine sees it: its name, its cloud and
// its approvers (none: the requester's Confirm is enough).
type Site struct {
	Name      string
	Cloud     Cloud
	Approvers []string
}

// Fleet is the targets the engine sends to and follows jobs on.
type Fleet interface {
	// Sites lists every configured target. The first one also follows the
	// jobs of targets no longer configured (only to give them up).
	Sites() []Site
	// SiteOf returns the target request r belongs to; ok is false when it
	// is no longer configured (Site.Name is then r's target, Cloud nil).
	SiteOf(r store.Request) (s Site, ok bool)
}

// Reporter is how the engine talks to people: it says what happened, the
// Reporter says it (the bot: in Slack) and audits it. Its methods must not
// change a request's state; the ones that post report whether the post
// went out, and the engine keeps whatever is owed for a later try. (The
// outbox that posts within Slack's limits will sit behind this port.)
type Reporter interface {
	// Decided tells of a person's decision the Runner recorded: the
	// Reporter audits it and answers in the messages that carried its
	// buttons.
	Decided(ctx context.Context, d Decision)
	// AskApproval posts the approval request of r, which now awaits an
	// approver, and returns its message's ts. On an error nobody was
	// asked: the Runner returns r to planned and tells with Decided
	// (Decision.Err set).
	AskApproval(ctx context.Context, r store.Request) (ts string, err error)
	// Announce posts the channel message of r, whose first wave is about
	// to go, and returns its ts. On an error nothing is sent: the Runner
	// stops and finishes the request and says so with Sent.
	Announce(ctx context.Context, r store.Request) (ts string, err error)
	// Results posts the answers of wave k of r in its thread (when recovered is set, first what the sender that
	// stopped left), from the first part not yet posted (MarkPosted records
	// each). It reports whether every part is out; until then the answers
	// stay pending and a later tick tries again.
	Results(ctx context.Context, r store.Request, wave int, answers []upgrade.UpgradeResult, recovered *Recovery) bool
	// Sent tells how the sending of a wave ended (audit, and the answer to
	// whoever set it going, at s.Reply).
	Sent(ctx context.Context, s SendReport)
	// JobEnds posts the ends of jobs of r (failures first) and returns how
	// many of them, in order, it reported; the others are reported again
	// by a later poll.
	JobEnds(ctx context.Context, r store.Request, jobs []store.Job) int
	// Paused tells that r was paused (step says why) and offers Continue
	// and Stop.
	Paused(ctx context.Context, r store.Request, step Step)
	// Summary posts the final summary of r, from the first part not yet
	// posted; it reports whether every part is out.
	Summary(ctx context.Context, r store.Request, s Summary) bool
	// Finished tells that r is finished (its summary is out).
	Finished(ctx context.Context, r store.Request, jobs []store.Job)
	// Expired tells that the plan r expired without a decision.
	Expired(ctx context.Context, r store.Request)
	// Refresh shows r as it is now in its channel message (counts, waves,
	// buttons that still apply).
	Refresh(ctx context.Context, r store.Request)
}

// Metrics counts what the engine does; nil counts nothing.
type Metrics interface {
	// BatchCalled counts a batch call of target by result ("ok", "error").
	BatchCalled(target, result string)
	// JobEnded counts a job of target that ended (its status, or
	// "unfollowed"; target "unknown" when no longer configured).
	JobEnded(target, status string)
}

// Decision is a person's decision the Runner recorded.
type Decision struct {
	Verb    Verb
	Request store.Request // as the decision left it
	By      string        // who decided
	Reply   string        // where to answer the one who pressed (opaque; "" none)
	// Err is set when the decision could not be carried out (the approval
	// request could not be posted): the request was put back as it was.
	Err error
}

// SendReport is how the sending of a wave ended.
type SendReport struct {
	Request store.Request
	Wave    int    // -1: none was due yet (every window closed)
	Reply   string // where to answer the one who set it going ("" none)
	// Answers are the wave's answers; JobIDs the jobs it started.
	Answers []upgrade.UpgradeResult
	JobIDs  []string
	// NotAnnounced is set when the channel message could not be posted:
	// nothing was sent and the request was stopped.
	NotAnnounced error
	// Recovered is set when the wave was taken over from a sender that
	// stopped: what that sender left.
	Recovered *Recovery
	// Unexpected are rows of the batch answers for instances that were not
	// sent (verbatim; any job in them is followed): name them to people.
	Unexpected []upgrade.UpgradeResult
	// Ended is set once the send ended (false: it was taken over or could
	// not be recorded; nothing more is said).
	Ended bool
}

// Summary is what the final summary reports beyond the request itself.
type Summary struct {
	Jobs []store.Job
	// After are the instances looked up again for the summary (versions
	// after), by ID; missing when the lookup failed.
	After map[string]upgrade.Instance
}
