package patch

import (
	"context"
	"fmt"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// Note records bookkeeping on request id that is not part of its life
// (the ts of a message posted about it, which report parts are out),
// atomically; it never changes the state or the rollout.
func (l *Lifecycle) Note(ctx context.Context, id string, note func(*store.Request)) (store.Request, error) {
	r, err := l.st.Update(ctx, id, func(x *store.Request) error { note(x); return nil })
	if err != nil {
		return store.Request{}, fmt.Errorf("record a note on request %s: %w", id, err)
	}
	return r, nil
}

// ResultsPosted records that the batch answers of request id's last wave
// are all in its thread: the next wave (or the summary) may go. Only the
// engine sets and clears ResultsPending.
func (l *Lifecycle) ResultsPosted(ctx context.Context, id string) (store.Request, error) {
	r, err := l.st.Update(ctx, id, func(x *store.Request) error { x.ResultsPending = false; wake(x, l.now()); return nil })
	if err != nil {
		return store.Request{}, fmt.Errorf("record that the answers of request %s are posted: %w", id, err)
	}
	return r, nil
}

// Wake makes request id due for housekeeping at once (a job of it ended):
// the next Tick looks at what it may do now.
func (l *Lifecycle) Wake(ctx context.Context, id string) error {
	if _, err := l.st.Update(ctx, id, func(x *store.Request) error { wake(x, l.now()); return nil }); err != nil {
		return fmt.Errorf("wake request %s: %w", id, err)
	}
	return nil
}
