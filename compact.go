package main

import (
	"fmt"
	"io"
	"os"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/store"
)

// compact copies the bbolt store file (BOT_STORE) into a new, smaller file
// without its free pages: `geminidb-patch-bot compact [DST]`, DST being
// BOT_STORE.compacted by default. The bot must be stopped (the file lock
// refuses a store in use); the operator then moves DST over BOT_STORE.
// Redis needs no compaction.
func compact(args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) int {
	src, ok := lookup("BOT_STORE")
	if !ok || src == "" {
		src = "geminidb-patch.db"
	}
	if isRedisURL(src) {
		fmt.Fprintln(stderr, "compact: BOT_STORE is a Redis URL; only the embedded bbolt file is compacted")
		return exitConfig
	}
	if len(args) > 1 {
		fmt.Fprintln(stderr, "usage: geminidb-patch-bot compact [DST]")
		return exitConfig
	}
	dst := src + ".compacted"
	if len(args) == 1 {
		dst = args[0]
	}
	before, err := os.Stat(src)
	if err != nil {
		fmt.Fprintf(stderr, "compact: %v\n", err)
		return exitFailed
	}
	if err := store.CompactBolt(src, dst); err != nil {
		fmt.Fprintf(stderr, "compact: %v\n", err)
		return exitFailed
	}
	after, err := os.Stat(dst)
	if err != nil {
		fmt.Fprintf(stderr, "compact: %v\n", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "compacted %s (%d bytes) into %s (%d bytes); with the bot stopped, move %s over %s\n",
		src, before.Size(), dst, after.Size(), dst, src)
	return exitOK
}
