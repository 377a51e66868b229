package bot

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/patch"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// Bounds of the "what is behind" view: groups shown at most, and names
// listed per group.
const (
	outdatedGroups      = 20
	outdatedNames       = 5
	outdatedSuggestRefs = 10 // a group this small is suggested by its names
)

// versionGroup is the instances of one engine at one version that have a
// patch available.
type versionGroup struct {
	Engine    string
	Version   string // the whole version, e.g. 3.11.3.2
	Instances []upgrade.Instance
	Suggest   string // the command text that patches them (without the slash command)
	Wider     bool   // Suggest also picks the engine's other versions
}

// compareVersions orders versions numerically by their dot-separated
// parts ("3.11.3.2" before "3.11.10.1"); parts that are not numbers
// compare as text.
func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		if ea == nil && eb == nil {
			if c := cmp.Compare(na, nb); c != 0 {
				return c
			}
			continue
		}
		if c := strings.Compare(pa[i], pb[i]); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(pa), len(pb))
}

// outdatedGroupsOf groups the instances with a patch available by engine
// and version, oldest version first (engines in the order given), and
// finds for each group a command that patches exactly its instances.
func outdatedGroupsOf(engines []string, insts []upgrade.Instance) []versionGroup {
	var groups []versionGroup
	for _, e := range engines {
		var of []upgrade.Instance
		for _, in := range insts {
			if in.PatchAvailable && strings.EqualFold(in.Engine, e) {
				of = append(of, in)
			}
		}
		byVersion := map[string][]upgrade.Instance{}
		var versions []string
		for _, in := range of {
			v := patch.VersionOf(in)
			if _, ok := byVersion[v]; !ok {
				versions = append(versions, v)
			}
			byVersion[v] = append(byVersion[v], in)
		}
		slices.SortFunc(versions, compareVersions)
		for _, v := range versions {
			g := versionGroup{Engine: strings.ToLower(e), Version: v, Instances: byVersion[v]}
			slices.SortFunc(g.Instances, func(a, b upgrade.Instance) int { return strings.Compare(a.Name, b.Name) })
			g.Suggest, g.Wider = suggestion(g, of, len(versions) == 1)
			groups = append(groups, g)
		}
	}
	return groups
}

// suggestion is the command text that selects exactly g's instances among
// the engine's outdated ones (of): the engine alone when it has one
// version behind, else the engine with a name pattern that picks no other
// outdated instance, else the names (or IDs) themselves, else the engine
// alone, which also picks the other versions (wider).
func suggestion(g versionGroup, of []upgrade.Instance, only bool) (text string, wider bool) {
	engine := "engine:" + g.Engine
	if only {
		return engine, false
	}
	prefix := g.Instances[0].Name
	for _, in := range g.Instances[1:] {
		for !strings.HasPrefix(in.Name, prefix) {
			prefix = prefix[:len(prefix)-1]
		}
	}
	if prefix != "" && globSafe(prefix) {
		glob := prefix + "*"
		exact := true
		for _, in := range of {
			if upgrade.MatchGlob(glob, in.Name) && patch.VersionOf(in) != g.Version {
				exact = false
				break
			}
		}
		if exact {
			return engine + " name:" + glob, false
		}
	}
	if len(g.Instances) <= outdatedSuggestRefs {
		names := map[string]int{}
		for _, in := range of {
			names[in.Name]++
		}
		refs := make([]string, len(g.Instances))
		for i, in := range g.Instances {
			refs[i] = in.ID
			if in.Name != "" && names[in.Name] == 1 && globSafe(in.Name) {
				refs[i] = in.Name
			}
		}
		return strings.Join(refs, " "), false
	}
	return engine, true
}

// globSafe tells whether s can stand in a name: pattern as itself: only
// the characters the parser accepts there, none of them a wildcard.
func globSafe(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// outdatedBlocks renders what is behind: the instances with a patch
// available counted by engine and version, oldest first, each group with
// a few names and the command that patches it, within Slack's limits.
func (k kit) outdatedBlocks(command string, engines []string, groups []versionGroup, total int) []slack.Block {
	names := make([]string, len(engines))
	for i, e := range engines {
		names[i] = esc(engineName(e))
	}
	head := fmt.Sprintf("*What is behind:* %s with a patch available (%s), by engine and version, oldest first.", plural(total, "instance"), strings.Join(names, ", "))
	if total == 0 {
		head = fmt.Sprintf("*Nothing is behind:* no instance (%s) has a patch available.", strings.Join(names, ", "))
	}
	blocks := []slack.Block{section(head)}
	lines := make([]string, len(groups))
	for i, g := range groups {
		shown := make([]string, 0, outdatedNames)
		for _, in := range g.Instances[:min(len(g.Instances), outdatedNames)] {
			shown = append(shown, k.name(truncate(in.Name, 64), in.ID))
		}
		list := strings.Join(shown, ", ")
		if n := len(g.Instances) - len(shown); n > 0 {
			list += fmt.Sprintf(" and %d more", n)
		}
		suggest := "`" + esc(truncate(command+" "+g.Suggest, 700)) + "`"
		if g.Wider {
			suggest += " (also picks its other versions)"
		}
		lines[i] = fmt.Sprintf("• *%s %s*: %s — %s\n    %s", esc(engineName(g.Engine)), esc(g.Version), plural(len(g.Instances), "instance"), list, suggest)
	}
	blocks = append(blocks, budgetSections("", lines, outdatedGroups, 7000, func(n int) string {
		return fmt.Sprintf("… and %d more groups; `%s list cassandra --outdated` or `… influxdb --outdated` shows one engine", n, esc(command))
	})...)
	if total > 0 {
		blocks = append(blocks, contextBlock("Copy a command to plan its group; add `--dry-run` to only see the plan."))
	}
	return blocks
}

// runOutdated answers "list [engine] --outdated": what is behind.
func (b *Bot) runOutdated(ctx context.Context, rid string, cmd slack.SlashCommand, engine, targetName string, reply func(string, []slack.Block)) {
	tg, engines, found, ok := b.patchable(ctx, rid, cmd, engine, targetName, reply)
	if !ok {
		return
	}
	groups := outdatedGroupsOf(engines, found)
	if b.targets.label(tg) != "" {
		// Several targets: the suggestions must name this one.
		for i := range groups {
			groups[i].Suggest += " --target " + tg.Name
		}
	}
	text := fmt.Sprintf("%s behind, in %s", plural(len(found), "instance"), plural(len(groups), "version group"))
	reply(text, withTarget(b.kitOf(tg).outdatedBlocks(b.cfg.Command, engines, groups, len(found)), b.targets.label(tg)))
}

// behindTTL is how long the App Home reuses a target's "what is behind":
// opening the tab again and again lists the fleet at most once a minute.
const behindTTL = time.Minute

// behindCache remembers each target's outdated instances for the App Home.
type behindCache struct {
	mu      sync.Mutex
	entries map[string]behindEntry // target name →
}

type behindEntry struct {
	at     time.Time
	groups []versionGroup
	total  int
}

// behind returns tg's instances with a patch available, grouped, from the
// cache when it is fresh.
func (b *Bot) behind(ctx context.Context, tg *target) ([]versionGroup, int, error) {
	now := b.cfg.Now()
	b.behindCache.mu.Lock()
	e, ok := b.behindCache.entries[tg.Name]
	b.behindCache.mu.Unlock()
	if ok && now.Sub(e.at) < behindTTL {
		return e.groups, e.total, nil
	}
	var found []upgrade.Instance
	for _, eng := range tg.BatchEngines {
		insts, err := tg.DB.AllInstances(ctx, eng)
		if err != nil {
			return nil, 0, fmt.Errorf("list %s instances of target %s: %w", eng, tg.Name, err)
		}
		for _, in := range insts {
			if in.PatchAvailable {
				found = append(found, in)
			}
		}
	}
	e = behindEntry{at: now, groups: outdatedGroupsOf(tg.BatchEngines, found), total: len(found)}
	b.behindCache.mu.Lock()
	if b.behindCache.entries == nil {
		b.behindCache.entries = map[string]behindEntry{}
	}
	b.behindCache.entries[tg.Name] = e
	b.behindCache.mu.Unlock()
	return e.groups, e.total, nil
}

// homeBehindBlocks is the App Home's "What is behind": for each target,
// its instances with a patch available counted by engine and version,
// oldest first. A target that cannot be read says so; the rest of the tab
// is shown anyway.
func (b *Bot) homeBehindBlocks(ctx context.Context) []slack.Block {
	var lines []string
	for _, tg := range b.targets.list {
		label := ""
		if l := b.targets.label(tg); l != "" {
			label = esc(l) + ": "
		}
		groups, total, err := b.behind(ctx, tg)
		if err != nil {
			b.log.Warn().Err(err).Str("target", tg.Name).Msg("what is behind, for the App Home")
			lines = append(lines, label+"_GeminiDB could not be read; open the tab again later._")
			continue
		}
		if total == 0 {
			lines = append(lines, label+"_Nothing is behind._")
			continue
		}
		parts := make([]string, len(groups))
		for i, g := range groups {
			parts[i] = fmt.Sprintf("%s %s: %d", esc(engineName(g.Engine)), esc(g.Version), len(g.Instances))
		}
		lines = append(lines, label+fmt.Sprintf("%s · %s", plural(total, "instance"), joinWithin(parts, " · ", 1500)))
	}
	return append([]slack.Block{slack.NewDividerBlock()},
		budgetSections("*What is behind* (instances with a patch available, oldest version first; `"+esc(b.cfg.Command)+" list --outdated` in a channel gives the commands)", lines, 10, 2800, func(n int) string {
			return fmt.Sprintf("… and %d more targets", n)
		})...)
}
