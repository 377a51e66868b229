package bot

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/commands"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// redeliveryWindow is how long a slash command is remembered, to ignore
// Slack's redeliveries of it.
const redeliveryWindow = 10 * time.Minute

// commandKey identifies one slash command invocation across redeliveries.
func commandKey(cmd slack.SlashCommand) string {
	if cmd.TriggerID != "" {
		return cmd.TriggerID
	}
	return cmd.ResponseURL
}

// ephemeral is an ack payload: Slack shows it only to the person who typed
// the command. It is kept small: acks must stay well under 20 KB.
func ephemeral(text string) map[string]any {
	return map[string]any{"response_type": "ephemeral", "text": truncate(text, maxMessageChars)}
}

// onSlashCommand runs on the ack path: only pure, in-memory checks happen
// here. It returns the ack payload and queues the slow work.
func (b *Bot) onSlashCommand(_ context.Context, cmd slack.SlashCommand, retry int) any {
	rid := newID("r-")
	log := b.log.With().Str("request_id", rid).Str("user", cmd.UserID).Str("channel", cmd.ChannelID).Logger()
	if cmd.Command != b.cfg.Command {
		b.metrics.Commands.WithLabelValues("unknown_command").Inc()
		return ephemeral(fmt.Sprintf("I only answer %s.", b.cfg.Command))
	}
	req, err := commands.Parse(cmd.Text)
	if err != nil {
		var ue *commands.UsageError
		msg := "I could not read that command."
		if errors.As(err, &ue) {
			msg = ue.Msg
		}
		b.metrics.Commands.WithLabelValues("bad_input").Inc()
		log.Info().Str("error", msg).Msg("bad command input")
		return ephemeral(msg + "\nType `" + b.cfg.Command + " help` for help.")
	}
	if req.Kind == commands.KindHelp {
		b.metrics.Commands.WithLabelValues("help").Inc()
		return ephemeral(commands.Help(b.cfg.Command))
	}
	a := auditInfo{RequestID: rid, User: cmd.UserID, Channel: cmd.ChannelID, Instances: req.Instances}
	if !b.access.channelAllowed(cmd.ChannelID) {
		b.metrics.Commands.WithLabelValues("refused").Inc()
		b.audit("refused", a, "reason", "channel not allowed")
		return ephemeral(fmt.Sprintf("%s does not work in this channel. Ask an admin for the channels listed in BOT_ALLOWED_CHANNELS.", b.cfg.Command))
	}
	// Who is certainly not allowed (by ID, or by group members already
	// cached) is refused here, before taking a place in the queue.
	if b.access.refusedNow(cmd.UserID) {
		b.metrics.Commands.WithLabelValues("refused").Inc()
		b.audit("refused", a, "reason", "user not allowed")
		return ephemeral(fmt.Sprintf("You are not allowed to use %s: your Slack user is not in BOT_ALLOWED_USERS. Ask the bot's admin to add you.", b.cfg.Command))
	}
	task := func(ctx context.Context) { b.runCommand(ctx, rid, cmd, req, retry) }
	busy := func(ctx context.Context) {
		if err := b.respond(ctx, cmd.ResponseURL, true, "I am busy with other requests right now; nothing was done. Try again in a minute.", nil); err != nil {
			b.log.Warn().Err(err).Str("request_id", rid).Msg("could not say the bot is busy")
		}
	}
	if !b.enqueue(task, busy) {
		b.metrics.Commands.WithLabelValues("busy").Inc()
		return nil
	}
	switch req.Kind {
	case commands.KindPatch:
		if !req.Selectors.Empty() {
			return ephemeral(fmt.Sprintf("Selecting %s in GeminiDB…", req.Selectors.String()))
		}
		return ephemeral(fmt.Sprintf("Checking %s against GeminiDB…", plural(len(req.Instances), "instance")))
	case commands.KindList:
		return ephemeral("Looking for instances with a patch available…")
	default:
		return ephemeral("Looking it up…")
	}
}

// runCommand is the slow half of a slash command, run by the worker pool.
func (b *Bot) runCommand(ctx context.Context, rid string, cmd slack.SlashCommand, req commands.Request, retry int) {
	log := b.log.With().Str("request_id", rid).Str("user", cmd.UserID).Str("channel", cmd.ChannelID).Logger()
	a := auditInfo{RequestID: rid, User: cmd.UserID, Channel: cmd.ChannelID, Instances: req.Instances}
	reply := func(text string, blocks []slack.Block) {
		if err := b.respond(ctx, cmd.ResponseURL, true, text, blocks); err != nil {
			log.Error().Err(err).Msg("reply to slash command failed")
		}
	}
	// Slack redelivers a command whose ack was late, possibly to another
	// replica: the store remembers which commands were taken. (Store I/O
	// happens here, after the ack, never on the ack path.)
	if first, err := b.st.Remember(ctx, "slash:"+commandKey(cmd), redeliveryWindow); err != nil {
		log.Warn().Err(err).Msg("could not check for a redelivered command; handling it")
	} else if !first {
		log.Info().Int("retry_attempt", retry).Msg("duplicate slash command delivery ignored")
		b.metrics.Commands.WithLabelValues("duplicate").Inc()
		return
	}
	ok, err := b.access.userAllowed(ctx, cmd.UserID)
	if err != nil {
		log.Error().Err(err).Msg("check user-group membership")
		b.metrics.Commands.WithLabelValues("error").Inc()
		reply(fmt.Sprintf("I could not check whether you may patch (Slack user groups could not be read); nothing was done. Try again. (request %s)", rid), nil)
		return
	}
	if !ok {
		b.metrics.Commands.WithLabelValues("refused").Inc()
		b.audit("refused", a, "reason", "user not allowed")
		reply(fmt.Sprintf("You are not allowed to use %s: you are not in BOT_ALLOWED_USERS or its user groups. Ask the bot's admin to add you.", b.cfg.Command), nil)
		return
	}
	// The per-person limit lives in the store, so replicas share it.
	if allowed, err := b.st.Allow(ctx, "commands:"+cmd.UserID, b.cfg.CommandsPerMin, time.Minute); err != nil {
		log.Warn().Err(err).Msg("could not check the rate limit; handling the command")
	} else if !allowed {
		b.metrics.Commands.WithLabelValues("rate_limited").Inc()
		b.audit("refused", a, "reason", "rate limit")
		reply(fmt.Sprintf("Slow down: at most %d commands per minute per person; nothing was done. Try again in a minute.", b.cfg.CommandsPerMin), nil)
		return
	}
	if req.Kind == commands.KindPatch && !b.botIsIn(ctx, cmd, a, reply) {
		return
	}
	switch req.Kind {
	case commands.KindPatch:
		b.runPlan(ctx, rid, cmd, req, "", true)
	case commands.KindStatus:
		b.runStatus(ctx, rid, cmd, req.ID, req.Target, reply)
	case commands.KindList:
		if req.Outdated {
			b.runOutdated(ctx, rid, cmd, req.Engine, req.Target, reply)
			return
		}
		b.runList(ctx, rid, cmd, req.Engine, req.Target, reply)
	case commands.KindHistory:
		b.runHistory(ctx, rid, cmd, req, reply)
	}
}

// runPlan looks the instances up, stores the plan and shows it. replace
// says whether the plan replaces the message of cmd's response_url (the
// slash command's "Checking…"); a Retry shows it as a new message.
func (b *Bot) runPlan(ctx context.Context, rid string, cmd slack.SlashCommand, req commands.Request, note string, replace bool) {
	log := b.log.With().Str("request_id", rid).Str("user", cmd.UserID).Str("channel", cmd.ChannelID).Logger()
	a := auditInfo{RequestID: rid, User: cmd.UserID, Channel: cmd.ChannelID, Instances: req.Instances}
	reply := func(text string, blocks []slack.Block) {
		if err := b.respond(ctx, cmd.ResponseURL, replace, text, blocks); err != nil {
			log.Error().Err(err).Msg("reply to slash command failed")
		}
	}
	tg, ok := b.pickTarget(ctx, req.Target, cmd.UserID, cmd.ChannelID, reply)
	if !ok {
		return
	}
	a.Target, log = tg.Name, log.With().Str("target", tg.Name).Logger()
	if !req.DryRun {
		open, err := b.openPlans(ctx, cmd.UserID)
		if err != nil {
			log.Error().Err(err).Msg("count open plans")
			reply(fmt.Sprintf("Something went wrong (request %s); nothing was done.", rid), nil)
			return
		}
		if open >= b.cfg.MaxOpenPlans {
			b.metrics.Commands.WithLabelValues("rate_limited").Inc()
			b.audit("refused", a, "reason", "too many open plans")
			reply(fmt.Sprintf("You already have %d plans waiting for a decision (the limit is %d). Confirm or cancel one first.", open, b.cfg.MaxOpenPlans), nil)
			return
		}
	}
	if req.Selectors.Empty() && len(req.Instances) > b.cfg.MaxInstances {
		tooMany := &TooManyError{Named: len(req.Instances), Max: b.cfg.MaxInstances}
		b.metrics.Commands.WithLabelValues("refused").Inc()
		b.audit("refused", a, "reason", "too many instances")
		reply(tooMany.Error(), nil)
		return
	}
	b.audit("requested", a, "dry_run", req.DryRun, "force", req.Force, "selectors", req.Selectors.String())
	now := b.cfg.Now()
	planOpts := upgrade.PlanOptions{BatchEngines: tg.BatchEngines, Force: req.Force, Now: now.UTC()}
	var plan upgrade.Plan
	var fleet *Fleet
	var err error
	if req.Selectors.Empty() {
		plan, err = tg.DB.Plan(ctx, req.Instances, planOpts)
	} else {
		var f Fleet
		plan, f, err = fleetPlan(ctx, tg.DB, req, b.cfg.MaxInstances, planOpts)
		fleet = &f
	}
	var tooMany *TooManyError
	if errors.As(err, &tooMany) {
		b.metrics.Commands.WithLabelValues("refused").Inc()
		b.audit("refused", a, "reason", "too many instances", "selectors", tooMany.Selectors, "selected", tooMany.Selected)
		reply(tooMany.Error(), nil)
		return
	}
	if err != nil {
		b.metrics.Commands.WithLabelValues("error").Inc()
		log.Error().Err(err).Msg("build plan")
		reply("I could not check the instances, so nothing was done.\n"+b.userError(err, rid), nil)
		return
	}
	if plan, err = b.skipLocked(ctx, tg.Name, plan); err != nil {
		b.metrics.Commands.WithLabelValues("error").Inc()
		log.Error().Err(err).Msg("build plan")
		reply(fmt.Sprintf("Something went wrong (request %s); nothing was done.", rid), nil)
		return
	}
	log.Info().Int("patchable", len(plan.Targets)).Int("skipped", len(plan.Skipped)).Strs("instance_ids", targetIDs(plan)).Msg("plan ready")
	opts := patch.Options{Canary: req.Canary, WaitForWindow: req.WaitForWindow, WaveSize: req.WaveSize, MaxErrors: req.MaxErrors}
	if opts.Canary == 0 {
		opts.Canary = b.cfg.Canary
	}
	// BOT_FLEET_GUARD: above it, a canary of 1 (unless --canary or
	// BOT_CANARY says otherwise) and waves of --wave-size (default 10).
	opts = opts.Guarded(plannedCount(plan, opts), b.cfg.FleetGuard)
	waves := patch.Waves(plan, opts, now.UTC())
	if text := rolloutText(patch.Rollout{Options: opts, Waves: waves}, now.UTC()); text != "" {
		note = strings.TrimSpace(note + "\n" + text)
	}
	view := PlanView{RequestID: rid, DryRun: req.DryRun, Approval: len(tg.Approvers) > 0, Note: note, Scheduled: scheduledCount(waves, plan), Target: b.targets.label(tg)}
	if req.DryRun || len(waves) == 0 {
		b.metrics.Commands.WithLabelValues("planned").Inc()
		reply(fmt.Sprintf("Patch plan %s: %d to patch, %d skipped", rid, len(plan.Targets), len(plan.Skipped)), b.planView(tg, plan, view, fleet))
		return
	}
	view.ExpiresAt = now.Add(b.cfg.ConfirmTTL)
	r := store.Request{
		ID: rid, Requester: cmd.UserID, Channel: cmd.ChannelID, Text: req.String(),
		ResponseURL: cmd.ResponseURL, CreatedAt: now, ExpiresAt: view.ExpiresAt, Team: cmd.TeamID,
		Target: tg.Name,
	}
	if _, err := b.run.Create(ctx, r, plan, opts); err != nil {
		log.Error().Err(err).Msg("store plan")
		reply(fmt.Sprintf("Something went wrong (request %s); nothing was done.", rid), nil)
		return
	}
	b.metrics.Commands.WithLabelValues("planned").Inc()
	reply(fmt.Sprintf("Patch plan %s: %d to patch, %d skipped", rid, len(plan.Targets), len(plan.Skipped)), b.planView(tg, plan, view, fleet))
}

// openPlans counts the user's plans still waiting for a decision, from
// the store's per-person index: no plan is read.
func (b *Bot) openPlans(ctx context.Context, user string) (int, error) {
	n, err := b.st.OpenPlans(ctx, user, b.cfg.Now())
	if err != nil {
		return 0, fmt.Errorf("count open plans: %w", err)
	}
	return n, nil
}

// runStatus answers "status <job-id|request-id>".
func (b *Bot) runStatus(ctx context.Context, rid string, cmd slack.SlashCommand, id, targetName string, reply func(string, []slack.Block)) {
	if r, err := b.st.Get(ctx, id); err == nil {
		if r.Channel != cmd.ChannelID {
			// A request is shown only where its thread is: the people of
			// that channel already see it; others are not told more.
			b.metrics.Commands.WithLabelValues("refused").Inc()
			reply(fmt.Sprintf("Request `%s` belongs to another channel; ask for its status there.", esc(r.ID)), nil)
			return
		}
		jobs, err := b.st.Jobs(ctx, r.ID)
		if err != nil {
			b.log.Error().Err(err).Str("request_id", rid).Msg("read jobs")
			reply(fmt.Sprintf("Something went wrong (request %s).", rid), nil)
			return
		}
		p, results, err := patch.PlanOf(r)
		if err != nil {
			b.log.Error().Err(err).Str("request_id", rid).Msg("status")
		}
		blocks := withTarget(b.kitOf(b.targets.of(r)).requestStatusBlocks(r, p, results, jobs), b.targets.labelOf(r))
		b.metrics.Commands.WithLabelValues("status").Inc()
		reply("Status of "+r.ID, blocks)
		return
	} else if !errors.Is(err, store.ErrNotFound) {
		b.log.Error().Err(err).Str("request_id", rid).Msg("read request")
		reply(fmt.Sprintf("Something went wrong (request %s).", rid), nil)
		return
	}
	if strings.HasPrefix(id, "r-") {
		// Request IDs are the bot's own: one it does not know ended longer
		// ago than the retention (or never existed).
		reply(fmt.Sprintf("Request `%s` is not known here. Finished requests are deleted %s after they end (BOT_RETENTION); the audit log keeps every decision.", esc(id), retentionText(b.cfg.Retention)), nil)
		return
	}
	tg, ok := b.pickTarget(ctx, targetName, cmd.UserID, cmd.ChannelID, reply)
	if !ok {
		return
	}
	if text, ok := b.lockedInstance(ctx, tg.Name, id); ok {
		b.metrics.Commands.WithLabelValues("status").Inc()
		reply(text, nil)
		return
	}
	// A job is shown only where the request that started it was made, as
	// its request is: its ID alone carries no right to read it.
	sj, err := b.st.Job(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		b.statusOfInstance(ctx, rid, tg, id, reply)
		return
	case err != nil:
		b.log.Error().Err(err).Str("request_id", rid).Msg("read job")
		reply(fmt.Sprintf("Something went wrong (request %s).", rid), nil)
		return
	}
	if owner, err := b.st.Get(ctx, sj.RequestID); err != nil || owner.Channel != cmd.ChannelID {
		b.metrics.Commands.WithLabelValues("refused").Inc()
		reply(fmt.Sprintf("Job `%s` belongs to a request of another channel; ask for its status there.", esc(id)), nil)
		return
	}
	job, err := tg.DB.Job(ctx, id)
	if err != nil {
		if errors.Is(err, upgrade.ErrJobNotFound) {
			reply(fmt.Sprintf("No request or job `%s` is known here or in GeminiDB project %s.", esc(id), esc(tg.ProjectID)), nil)
			return
		}
		reply("I could not read the job.\n"+b.userError(err, rid), nil)
		return
	}
	b.metrics.Commands.WithLabelValues("status").Inc()
	reply("Status of job "+job.ID, withTarget(b.kitOf(tg).jobStatusBlocks(job), b.targets.label(tg)))
}

// runList answers "list [engine]": instances with a patch available.
func (b *Bot) runList(ctx context.Context, rid string, cmd slack.SlashCommand, engine, targetName string, reply func(string, []slack.Block)) {
	tg, engines, found, ok := b.patchable(ctx, rid, cmd, engine, targetName, reply)
	if !ok {
		return
	}
	text := fmt.Sprintf("%s with a patch available", plural(len(found), "instance"))
	if len(found) == 0 {
		text = "No instance has a patch available."
	}
	reply(text, withTarget(b.kitOf(tg).listBlocks(engines, found, b.cfg.Now()), b.targets.label(tg)))
}

// respond posts to a response_url, replacing the message it belongs to when
// replace is set. Response URL messages are ephemeral.
func (b *Bot) respond(ctx context.Context, responseURL string, replace bool, text string, blocks []slack.Block) error {
	if responseURL == "" {
		return errors.New("respond: no response_url")
	}
	opts := []slack.MsgOption{slack.MsgOptionResponseURL(responseURL, slack.ResponseTypeEphemeral), slack.MsgOptionText(text, false)}
	if replace {
		opts = append(opts, slack.MsgOptionReplaceOriginal(responseURL))
	}
	if len(blocks) > 0 {
		opts = append(opts, slack.MsgOptionBlocks(fit(blocks, maxMessageText, "")...))
	}
	if _, _, err := b.api.PostMessageContext(ctx, "", opts...); err != nil {
		return fmt.Errorf("post to response_url: %w", redactResponseURL(err, responseURL))
	}
	return nil
}

// redactedURL stands for a response_url in errors.
const redactedURL = "[response_url]"

// redactResponseURL keeps a response_url, which is a credential (anyone
// holding it can post as the bot for 30 minutes), out of an error that may
// be logged: a transport error names the URL it failed on.
func redactResponseURL(err error, responseURL string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: redactedURL, Err: redactResponseURL(ue.Err, responseURL)}
	}
	if responseURL != "" && strings.Contains(err.Error(), responseURL) {
		return errors.New(strings.ReplaceAll(err.Error(), responseURL, redactedURL))
	}
	return err
}

// tell sends an ephemeral message to one user in a channel.
func (b *Bot) tell(ctx context.Context, channel, user, text string) {
	if _, err := b.api.PostEphemeralContext(ctx, channel, user, slack.MsgOptionText(text, false)); err != nil {
		b.log.Warn().Err(err).Str("user", user).Str("channel", channel).Msg("ephemeral message failed")
	}
}

// userError turns an error into a sentence for Slack: the cloud's error code
// and message verbatim, a timeout, or a generic line with the request ID.
func (b *Bot) userError(err error, rid string) string {
	var ae *upgrade.APIError
	switch {
	case errors.As(err, &ae):
		code := ae.Code
		if code == "" {
			code = fmt.Sprintf("HTTP %d", ae.Status)
		}
		return withHint(fmt.Sprintf("GeminiDB answered `%s` %s (%s %s, HTTP %d).", esc(code), esc(ae.Message), ae.Method, esc(ae.Path), ae.Status), ae.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("GeminiDB did not answer in time (request %s). Try again later.", rid)
	case errors.Is(err, context.Canceled):
		return fmt.Sprintf("The bot is shutting down (request %s). Try again in a minute.", rid)
	default:
		return fmt.Sprintf("Could not reach GeminiDB: %s (request %s).", esc(err.Error()), rid)
	}
}

// retentionText renders the retention for people, e.g. "90 days".
func retentionText(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return plural(int(d/(24*time.Hour)), "day")
	}
	return d.String()
}

// scheduledCount is how many instances of waves the plan itself left out
// (outside their window): with --wait-for-window they are scheduled.
func scheduledCount(waves []patch.Wave, p upgrade.Plan) int {
	in := map[string]bool{}
	for _, t := range p.Targets {
		in[t.Instance.ID] = true
	}
	n := 0
	for _, w := range waves {
		for _, id := range w.InstanceIDs() {
			if !in[id] {
				n++
			}
		}
	}
	return n
}

// plannedCount is how many instances a plan sends with opts: its targets
// and, with --wait-for-window, those it schedules for their window.
func plannedCount(p upgrade.Plan, opts patch.Options) int {
	n := 0
	for _, w := range patch.Waves(p, patch.Options{WaitForWindow: opts.WaitForWindow}, time.Time{}) {
		n += len(w.InstanceIDs())
	}
	return n
}

// patchable lists the instances with a patch available of the target a
// "list" names (or the channel's), of one engine or of every engine the
// target's batch API accepts. It answers the user itself when it cannot,
// and then returns false.
func (b *Bot) patchable(ctx context.Context, rid string, cmd slack.SlashCommand, engine, targetName string, reply func(string, []slack.Block)) (*target, []string, []upgrade.Instance, bool) {
	tg, ok := b.pickTarget(ctx, targetName, cmd.UserID, cmd.ChannelID, reply)
	if !ok {
		return nil, nil, nil, false
	}
	engines := tg.BatchEngines
	if engine != "" {
		engines = []string{engine}
	}
	var found []upgrade.Instance
	for _, e := range engines {
		insts, err := tg.DB.AllInstances(ctx, e)
		if err != nil {
			b.log.Error().Err(err).Str("request_id", rid).Msg("list instances")
			reply("I could not list the instances.\n"+b.userError(err, rid), nil)
			return nil, nil, nil, false
		}
		for _, in := range insts {
			if in.PatchAvailable {
				found = append(found, in)
			}
		}
	}
	b.metrics.Commands.WithLabelValues("list").Inc()
	return tg, engines, found, true
}
