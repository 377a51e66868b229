package store

import (
	"container/heap"
	"sync"
	"time"
)

// defaultMemoKeys bounds how many keys one memo holds: far more than the
// users and commands of the last few minutes, and little memory (a few
// megabytes at most).
const defaultMemoKeys = 100_000

// memo is a bounded map of keys that expire, in memory: where a Bolt keeps
// the state of Allow and Remember, which need not survive a restart. It is
// safe for concurrent use.
//
// Every call first drops the keys that expired, which costs O(log n) per
// dropped key, so expired keys never pile up. When the memo is full, a new
// key pushes out the one that expires soonest.
type memo[V any] struct {
	mu      sync.Mutex
	max     int
	entries map[string]memoEntry[V]
	expiry  expiryHeap
}

// memoEntry is a value and when it expires.
type memoEntry[V any] struct {
	val   V
	until time.Time
}

// newMemo returns an empty memo holding at most max keys.
func newMemo[V any](max int) *memo[V] {
	return &memo[V]{max: max, entries: make(map[string]memoEntry[V])}
}

// update drops the expired keys at now(), then calls fn with the value of
// key (found is false when it has none, or it expired) and the time fn must
// use. If fn returns save, the value it left in *v is stored to expire at
// until. The whole call holds the memo's lock, so it is atomic against
// other calls.
func (m *memo[V]) update(now func() time.Time, key string, fn func(v *V, found bool, now time.Time) (until time.Time, save bool)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := now()
	m.dropExpired(t)
	e, found := m.entries[key]
	until, save := fn(&e.val, found, t)
	if !save {
		return
	}
	if !found && len(m.entries) >= m.max {
		m.evict()
	}
	if !found || !until.Equal(e.until) {
		heap.Push(&m.expiry, expiryItem{until: until, key: key})
	}
	e.until = until
	m.entries[key] = e
}

// dropExpired deletes the keys that expired at or before now. A heap item
// whose key has since been stored with another expiry is stale and only
// dropped.
func (m *memo[V]) dropExpired(now time.Time) {
	for len(m.expiry) > 0 && !now.Before(m.expiry[0].until) {
		it := heap.Pop(&m.expiry).(expiryItem)
		if e, ok := m.entries[it.key]; ok && e.until.Equal(it.until) {
			delete(m.entries, it.key)
		}
	}
}

// evict deletes the key that expires soonest.
func (m *memo[V]) evict() {
	for len(m.expiry) > 0 {
		it := heap.Pop(&m.expiry).(expiryItem)
		if e, ok := m.entries[it.key]; ok && e.until.Equal(it.until) {
			delete(m.entries, it.key)
			return
		}
	}
}

// len returns how many keys the memo holds, expired ones not yet dropped
// included.
func (m *memo[V]) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// expiryItem is a key of a memo and when it expires.
type expiryItem struct {
	until time.Time
	key   string
}

// expiryHeap orders keys by expiry, soonest first (container/heap).
type expiryHeap []expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryItem)) }
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
