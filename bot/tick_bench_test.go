package bot

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// BenchmarkFollowerTick runs one housekeeping tick and one poll tick over a
// store holding a few open plans and 1,000 or 50,000 finished requests (10
// instances each) and reports the time a tick takes; it must not grow with
// the history.
//
//	go test -run '^$' -bench FollowerTick ./bot
func BenchmarkFollowerTick(b *testing.B) {
	for _, past := range []int{1000, 50000} {
		b.Run(fmt.Sprintf("past=%d", past), func(b *testing.B) {
			st, err := store.Open(filepath.Join(b.TempDir(), "bot.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			plan := []byte(`{"refs":["a","b","c","d","e","f","g","h","i","j"],"targets":[],"batches":[]}`)
			var next atomic.Int64
			var wg sync.WaitGroup
			for range 32 {
				wg.Go(func() {
					for i := next.Add(1); i <= int64(past)+5; i = next.Add(1) {
						r := store.Request{ID: fmt.Sprintf("r-%07d", i), State: store.Done, Plan: plan, CreatedAt: time.Now()}
						if i > int64(past) {
							r.State, r.ExpiresAt = store.Planned, time.Now().Add(time.Hour)
						}
						if err := st.Create(b.Context(), r); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			bot := New(Options{Config: Config{Retention: 90 * 24 * time.Hour}, Store: st, Log: zerolog.Nop()})
			ctx := b.Context()
			b.ResetTimer()
			for range b.N {
				bot.run.Tick(ctx)
				bot.run.Poll(ctx, bot.targets.list[0].Name)
			}
		})
	}
}
