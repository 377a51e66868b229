package commands

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

const (
	id1 = "3f1c9d0b6e2a4c7d8e9f0a1b2c3d4e5fin13"
	id2 = "0a1b2c3d4e5f60718293a4b5c6d7e8f9in13"
)

type parseCase struct {
	name    string
	text    string
	want    Request
	wantErr []string // substrings the UsageError must contain; nil means success
}

var parseCases = []parseCase{
	// patch
	{name: "one id", text: id1, want: Request{Kind: KindPatch, Instances: []string{id1}}},
	{name: "names and ids", text: "orders-prod " + id1 + " users_prod", want: Request{Kind: KindPatch, Instances: []string{"orders-prod", id1, "users_prod"}}},
	{name: "commas", text: "a,b, c ,d", want: Request{Kind: KindPatch, Instances: []string{"a", "b", "c", "d"}}},
	{name: "newlines and tabs", text: "a\nb\r\n\tc\n", want: Request{Kind: KindPatch, Instances: []string{"a", "b", "c"}}},
	{name: "nbsp", text: "a\u00a0b", want: Request{Kind: KindPatch, Instances: []string{"a", "b"}}},
	{name: "dedup first seen", text: "b a b c a", want: Request{Kind: KindPatch, Instances: []string{"b", "a", "c"}}},
	{name: "case kept", text: "db1 DB1", want: Request{Kind: KindPatch, Instances: []string{"db1", "DB1"}}},
	{name: "dry run", text: "a --dry-run", want: Request{Kind: KindPatch, Instances: []string{"a"}, DryRun: true}},
	{name: "flags first", text: "--force --dry-run a b", want: Request{Kind: KindPatch, Instances: []string{"a", "b"}, DryRun: true, Force: true}},
	{name: "flags between", text: "a --FORCE b", want: Request{Kind: KindPatch, Instances: []string{"a", "b"}, Force: true}},
	{name: "flag twice", text: "a --force --force", want: Request{Kind: KindPatch, Instances: []string{"a"}, Force: true}},
	{name: "em dash flag", text: "a —dry-run", want: Request{Kind: KindPatch, Instances: []string{"a"}, DryRun: true}},
	{name: "en dash flag", text: "a –force", want: Request{Kind: KindPatch, Instances: []string{"a"}, Force: true}},
	{name: "backticks stripped", text: "`" + id1 + "` ```b\nc```", want: Request{Kind: KindPatch, Instances: []string{id1, "b", "c"}}},
	{name: "64 chars", text: strings.Repeat("a", 64), want: Request{Kind: KindPatch, Instances: []string{strings.Repeat("a", 64)}}},
	{name: "patch is not a keyword", text: "patch a", want: Request{Kind: KindPatch, Instances: []string{"patch", "a"}}},
	{name: "exactly max", text: names(MaxInstances), want: Request{Kind: KindPatch, Instances: strings.Fields(names(MaxInstances))}},
	{name: "max after dedup", text: names(MaxInstances) + " " + names(MaxInstances), want: Request{Kind: KindPatch, Instances: strings.Fields(names(MaxInstances))}},

	// patch errors
	{name: "empty", text: "", wantErr: []string{"Tell me which instances", "Usage:"}},
	{name: "blank", text: " \n\t , ", wantErr: []string{"Tell me which instances", "Usage:"}},
	{name: "only flags", text: "--dry-run", wantErr: []string{"Tell me which instances", "Usage:"}},
	{name: "unknown long flag", text: "a --foo", wantErr: []string{"`--foo` is not an option", "--dry-run"}},
	{name: "unknown short flag", text: "-f a", wantErr: []string{"`-f` is not an option"}},
	{name: "flag with value", text: "a --dry-run=true", wantErr: []string{"`--dry-run` takes no value"}},
	{name: "canary", text: "a b --canary 1", want: Request{Kind: KindPatch, Instances: []string{"a", "b"}, Canary: 1}},
	{name: "canary with equals", text: "--canary=10 a", want: Request{Kind: KindPatch, Instances: []string{"a"}, Canary: 10}},
	{name: "wait for window", text: "a —wait-for-window --canary 2", want: Request{Kind: KindPatch, Instances: []string{"a"}, Canary: 2, WaitForWindow: true}},
	{name: "canary without number", text: "a --canary", wantErr: []string{"`--canary` needs a number"}},
	{name: "canary zero", text: "a --canary 0", wantErr: []string{"from 1 to 10"}},
	{name: "canary too big", text: "a --canary 11", wantErr: []string{"from 1 to 10"}},
	{name: "canary not a number", text: "a --canary b", wantErr: []string{"from 1 to 10, not `b`"}},
	{name: "canary on status", text: "status a --canary 1", wantErr: []string{"only applies"}},
	{name: "too many", text: names(MaxInstances + 1), wantErr: []string{"101 instances", "at most 100"}},
	{name: "leading star", text: "a *orders", wantErr: []string{"`*orders` starts with `*`", "fuzzy"}},
	{name: "lone star", text: "*", wantErr: []string{"fuzzy"}},
	{name: "bold", text: "*orders-prod*", wantErr: []string{"bold"}},
	{name: "bold two words", text: "*a b*", wantErr: []string{"`*a` starts with `*`"}},
	{name: "trailing star", text: "orders*", wantErr: []string{"contains `*`"}},
	{name: "italic", text: "_orders_", wantErr: []string{"italic"}},
	{name: "strike", text: "~orders~", wantErr: []string{"strikethrough"}},
	{name: "user mention", text: "<@U123> a", wantErr: []string{"mention of a person"}},
	{name: "user mention with name", text: "a <@U123|bob smith>", wantErr: []string{"mention of a person"}},
	{name: "channel", text: "<#C123|general>", wantErr: []string{"channel"}},
	{name: "here", text: "<!here> a", wantErr: []string{"special mention"}},
	{name: "link", text: "<http://x.example|x.example>", wantErr: []string{"link"}},
	{name: "mailto", text: "<mailto:a@b.c|a@b.c>", wantErr: []string{"link"}},
	{name: "escaped angle", text: "&lt;db&gt;", wantErr: []string{"contains `&amp;`"}},
	{name: "dot", text: "db.prod", wantErr: []string{"`db.prod` contains `.`", "Usage:"}},
	{name: "quote", text: `"db1"`, wantErr: []string{"contains `\"`"}},
	{name: "unicode letter", text: "dbé", wantErr: []string{"contains `é`"}},
	{name: "zero width", text: "db\u200b1", wantErr: []string{"invisible character U+200B"}},
	{name: "65 chars", text: strings.Repeat("a", 65), wantErr: []string{"65 characters", "at most 64"}},
	{name: "long token truncated", text: strings.Repeat("b", 300), wantErr: []string{strings.Repeat("b", maxShown) + "…`"}},
	{name: "nul", text: "a\x00b", wantErr: []string{"control character U+0000"}},
	{name: "escape", text: "a\x1b[31m", wantErr: []string{"control character U+001B"}},
	{name: "c1 control", text: "a\u0090", wantErr: []string{"control character U+0090"}},
	{name: "invalid utf8", text: "a\xff", wantErr: []string{"UTF-8"}},
	{name: "too long", text: strings.Repeat("a ", MaxTextLen/2+1), wantErr: []string{"characters long", "at most 10000"}},
	{name: "keyword later", text: "a help", wantErr: []string{"`help` is a subcommand"}},
	{name: "keyword later upper", text: "a b STATUS", wantErr: []string{"`status` is a subcommand"}},

	// status
	{name: "status job", text: "status 0b7f3c2e-5a1d-4e6f-9a8b-7c6d5e4f3a2b", want: Request{Kind: KindStatus, ID: "0b7f3c2e-5a1d-4e6f-9a8b-7c6d5e4f3a2b"}},
	{name: "status upper", text: "  Status\tr-123 ", want: Request{Kind: KindStatus, ID: "r-123"}},
	{name: "status missing", text: "status", wantErr: []string{"give its ID", "Usage: `/geminidb-patch status &lt;job-id|request-id&gt; [--target NAME]`"}},
	{name: "status two", text: "status a b", wantErr: []string{"exactly one", "gave 2"}},
	{name: "status flag", text: "status a --force", wantErr: []string{"`--force` only applies", "`status` takes no option but `--target`"}},
	{name: "status flag first", text: "--dry-run status a", wantErr: []string{"`--dry-run` only applies"}},
	{name: "status bad id", text: "status a/b", wantErr: []string{"contains `/`", "job and request IDs"}},
	{name: "status star", text: "status *x", wantErr: []string{"fuzzy"}},
	{name: "status mention", text: "status <@U1>", wantErr: []string{"mention", "Usage: `/geminidb-patch status"}},

	// list
	{name: "list", text: "list", want: Request{Kind: KindList}},
	{name: "list cassandra", text: "LIST Cassandra", want: Request{Kind: KindList, Engine: EngineCassandra}},
	{name: "list influxdb", text: "list influxdb", want: Request{Kind: KindList, Engine: EngineInfluxDB}},
	{name: "list influx", text: "list INFLUX", want: Request{Kind: KindList, Engine: EngineInfluxDB}},
	{name: "list redis", text: "list redis", wantErr: []string{"not `redis`", "Usage: `/geminidb-patch list [cassandra|influxdb] [--outdated] [--target NAME]`"}},
	{name: "list two", text: "list cassandra influxdb", wantErr: []string{"at most one engine"}},
	{name: "list flag", text: "list --dry-run", wantErr: []string{"`--dry-run` only applies"}},
	{name: "list unicode fold", text: "list caſsandra", wantErr: []string{"not `caſsandra`"}},

	// history
	{name: "history", text: "history", want: Request{Kind: KindHistory}},
	{name: "history upper", text: " HISTORY ", want: Request{Kind: KindHistory}},
	{name: "history mention", text: "history <@U0123ABCD>", want: Request{Kind: KindHistory, User: "U0123ABCD"}},
	{name: "history mention with name", text: "history <@W0123ABCD|ana smith> ", want: Request{Kind: KindHistory, User: "W0123ABCD"}},
	{name: "history instance", text: "history `cass-prod-1`", want: Request{Kind: KindHistory, Instance: "cass-prod-1"}},
	{name: "history instance id", text: "history " + id1, want: Request{Kind: KindHistory, Instance: id1}},
	{name: "history both", text: "history <@U0123ABCD> cass-prod-1", wantErr: []string{"not both", "Usage: `/geminidb-patch history [&lt;@user&gt;|&lt;instance&gt;]`"}},
	{name: "history two instances", text: "history a b", wantErr: []string{"gave 2 words"}},
	{name: "history two mentions", text: "history <@U0123ABCD> <@U0456EFGH>", wantErr: []string{"not several"}},
	{name: "history flag", text: "history --dry-run", wantErr: []string{"`--dry-run` only applies", "`history` takes no options"}},
	{name: "history flag first", text: "--force history", wantErr: []string{"`--force` only applies"}},
	{name: "history plain at", text: "history @ana", wantErr: []string{"`@ana` reached me as plain text"}},
	{name: "history bad mention", text: "history <@ana>", wantErr: []string{"not a Slack user mention"}},
	{name: "history unclosed mention", text: "history <@U0123ABCD", wantErr: []string{"not a Slack user mention"}},
	{name: "history channel", text: "history <#C123|ops>", wantErr: []string{"channel"}},
	{name: "history here", text: "history <!here>", wantErr: []string{"special mention"}},
	{name: "history keyword", text: "history list", wantErr: []string{"`list` is a subcommand"}},
	{name: "history star", text: "history *prod", wantErr: []string{"fuzzy"}},
	{name: "history control", text: "history a\x00", wantErr: []string{"control character U+0000"}},
	{name: "history as instance", text: "a history", wantErr: []string{"`history` is a subcommand"}},
	// --target
	{name: "target", text: "a b --target prod-eu-de", want: Request{Kind: KindPatch, Instances: []string{"a", "b"}, Target: "prod-eu-de"}},
	{name: "target first", text: "--TARGET Prod_1 a --force", want: Request{Kind: KindPatch, Instances: []string{"a"}, Force: true, Target: "Prod_1"}},
	{name: "target equals", text: "a --target=eu-nl", want: Request{Kind: KindPatch, Instances: []string{"a"}, Target: "eu-nl"}},
	{name: "target em dash", text: "a —target eu-nl", want: Request{Kind: KindPatch, Instances: []string{"a"}, Target: "eu-nl"}},
	{name: "target twice same", text: "a --target x --target=x", want: Request{Kind: KindPatch, Instances: []string{"a"}, Target: "x"}},
	{name: "target named like a keyword", text: "a --target list", want: Request{Kind: KindPatch, Instances: []string{"a"}, Target: "list"}},
	{name: "status target", text: "status r-1 --target eu-de", want: Request{Kind: KindStatus, ID: "r-1", Target: "eu-de"}},
	{name: "list target", text: "list --target eu-de", want: Request{Kind: KindList, Target: "eu-de"}},
	{name: "list engine target", text: "--target=eu-de list influx", want: Request{Kind: KindList, Engine: EngineInfluxDB, Target: "eu-de"}},
	{name: "target missing", text: "a --target", wantErr: []string{"`--target` needs the name of a target"}},
	{name: "target empty", text: "a --target=", wantErr: []string{"`--target` needs the name of a target"}},
	{name: "target then flag", text: "a --target --force", wantErr: []string{"`--target` needs the name of a target"}},
	{name: "target twice different", text: "a --target x --target y", wantErr: []string{"two targets", "`x`", "`y`"}},
	{name: "target bad name", text: "a --target eu.de", wantErr: []string{"`eu.de` contains `.`", "target names"}},
	{name: "target star", text: "a --target *", wantErr: []string{"fuzzy"}},
	{name: "help target", text: "help --target x", wantErr: []string{"`help` takes no options"}},
	{name: "flag value not target", text: "a --force=yes", wantErr: []string{"`--force` takes no value"}},

	// selectors
	{name: "engine", text: "engine:cassandra", want: Request{Kind: KindPatch, Selectors: Selectors{Engines: []string{EngineCassandra}}}},
	{name: "engine case and alias", text: "ENGINE:Influx engine:influxdb", want: Request{Kind: KindPatch, Selectors: Selectors{Engines: []string{EngineInfluxDB}}}},
	{name: "engines", text: "engine:influxdb engine:cassandra", want: Request{Kind: KindPatch, Selectors: Selectors{Engines: []string{EngineInfluxDB, EngineCassandra}}}},
	{name: "name glob", text: "name:orders-*", want: Request{Kind: KindPatch, Selectors: Selectors{Names: []string{"orders-*"}}}},
	{name: "name globs keep case", text: "Name:*-Prod-? name:db_1 name:*-Prod-?", want: Request{Kind: KindPatch, Selectors: Selectors{Names: []string{"*-Prod-?", "db_1"}}}},
	{name: "name star", text: "name:*", want: Request{Kind: KindPatch, Selectors: Selectors{Names: []string{"*"}}}},
	{name: "tag", text: "tag:env=prod", want: Request{Kind: KindPatch, Selectors: Selectors{Tags: []Tag{{"env", "prod"}}}}},
	{name: "tags", text: "TAG:Team=DB_ops tag:env=prod tag:Team=DB_ops tag:ver=3.11.2", want: Request{Kind: KindPatch, Selectors: Selectors{Tags: []Tag{{"Team", "DB_ops"}, {"env", "prod"}, {"ver", "3.11.2"}}}}},
	{name: "all", text: "ALL", want: Request{Kind: KindPatch, Selectors: Selectors{All: true}}},
	{name: "every kind and names", text: "a all engine:cassandra b name:x-* tag:k=v --dry-run", want: Request{Kind: KindPatch, Instances: []string{"a", "b"}, DryRun: true,
		Selectors: Selectors{All: true, Engines: []string{EngineCassandra}, Names: []string{"x-*"}, Tags: []Tag{{"k", "v"}}}}},
	{name: "selectors with commas", text: "engine:cassandra,name:a*,`tag:k=v`", want: Request{Kind: KindPatch, Selectors: Selectors{Engines: []string{EngineCassandra}, Names: []string{"a*"}, Tags: []Tag{{"k", "v"}}}}},
	{name: "max selectors", text: selectors(MaxSelectors), want: Request{Kind: KindPatch, Selectors: Selectors{Names: strings.Fields(strings.ReplaceAll(selectors(MaxSelectors), "name:", ""))}}},

	// selector errors
	{name: "engine redis", text: "engine:redis", wantErr: []string{"`engine:cassandra` or `engine:influxdb`, not `engine:redis`"}},
	{name: "engine empty", text: "engine:", wantErr: []string{"`engine:` needs an engine"}},
	{name: "name empty", text: "name:", wantErr: []string{"`name:` needs a pattern"}},
	{name: "name dot", text: "name:a.b", wantErr: []string{"`name:a.b` contains `.`", "name patterns"}},
	{name: "name brackets", text: "name:db[12]", wantErr: []string{"contains `[`"}},
	{name: "name too long", text: "name:" + strings.Repeat("a", 65), wantErr: []string{"65 characters", "at most 64"}},
	{name: "tag no value", text: "tag:env", wantErr: []string{"`tag:env` is not a tag selector", "`tag:KEY=VALUE`"}},
	{name: "tag empty value", text: "tag:env=", wantErr: []string{"not a tag selector"}},
	{name: "tag empty key", text: "tag:=prod", wantErr: []string{"not a tag selector"}},
	{name: "tag bad key", text: "tag:e.nv=prod", wantErr: []string{"`e.nv` contains `.`", "tag keys"}},
	{name: "tag bad value", text: "tag:env=a=b", wantErr: []string{"`a=b` contains `=`", "tag values"}},
	{name: "tag key too long", text: "tag:" + strings.Repeat("k", 37) + "=v", wantErr: []string{"37 characters", "at most 36"}},
	{name: "tag value too long", text: "tag:k=" + strings.Repeat("v", 44), wantErr: []string{"44 characters", "at most 43"}},
	{name: "unknown selector", text: "region:eu-de", wantErr: []string{"`region:eu-de` is not a selector I know", "`engine:ENGINE`"}},
	{name: "url is no selector", text: "https://x", wantErr: []string{"not a selector I know"}},
	{name: "bold selector", text: "*engine:cassandra*", wantErr: []string{"not a selector I know"}},
	{name: "too many selectors", text: selectors(MaxSelectors + 1), wantErr: []string{"21 selectors", "at most 20"}},
	{name: "selector on status", text: "status engine:cassandra", wantErr: []string{"contains `:`"}},
	{name: "all on list", text: "list all", wantErr: []string{"not `all`"}},

	// fleet flags
	{name: "wave size", text: "engine:cassandra --wave-size 5", want: Request{Kind: KindPatch, Selectors: Selectors{Engines: []string{EngineCassandra}}, WaveSize: 5}},
	{name: "wave size bounds", text: "a --wave-size=100 --max-errors=1000", want: Request{Kind: KindPatch, Instances: []string{"a"}, WaveSize: 100, MaxErrors: 1000}},
	{name: "max errors zero", text: "a --max-errors 0 --wave-size 1", want: Request{Kind: KindPatch, Instances: []string{"a"}, WaveSize: 1}},
	{name: "fleet rollout", text: "tag:env=prod —wave-size 10 --max-errors 2 --canary 3", want: Request{Kind: KindPatch, Selectors: Selectors{Tags: []Tag{{"env", "prod"}}}, Canary: 3, WaveSize: 10, MaxErrors: 2}},
	{name: "wave size zero", text: "a --wave-size 0", wantErr: []string{"`--wave-size` takes a number from 1 to 100, not `0`"}},
	{name: "wave size too big", text: "a --wave-size 101", wantErr: []string{"from 1 to 100"}},
	{name: "wave size missing", text: "a --wave-size", wantErr: []string{"`--wave-size` needs a number", "each wave"}},
	{name: "max errors negative", text: "a --max-errors -1", wantErr: []string{"`--max-errors` takes a number from 0 to 1000, not `-1`"}},
	{name: "max errors too big", text: "a --max-errors 1001", wantErr: []string{"from 0 to 1000"}},
	{name: "max errors huge", text: "a --max-errors 99999999999999999999", wantErr: []string{"from 0 to 1000"}},
	{name: "max errors missing", text: "a --max-errors", wantErr: []string{"`--max-errors` needs a number"}},
	{name: "wave size on list", text: "list --wave-size 2", wantErr: []string{"`--wave-size` only applies when patching", "`--outdated` and `--target`"}},
	{name: "outdated on patch", text: "a --outdated", wantErr: []string{"`--outdated` only applies to `list`", "every option but `--outdated`"}},
	{name: "outdated on status", text: "status r-1 --outdated", wantErr: []string{"`--outdated` only applies to `list`"}},
	{name: "outdated on history", text: "history --outdated", wantErr: []string{"`--outdated` only applies to `list`"}},
	{name: "outdated with value", text: "list --outdated=yes", wantErr: []string{"`--outdated` takes no value"}},
	{name: "selector only flags", text: "--wave-size 3", wantErr: []string{"Tell me which instances"}},

	// list --outdated
	{name: "list outdated", text: "list --outdated", want: Request{Kind: KindList, Outdated: true}},
	{name: "list engine outdated target", text: "--OUTDATED list cassandra --target eu-de", want: Request{Kind: KindList, Engine: EngineCassandra, Outdated: true, Target: "eu-de"}},

	// help
	{name: "help", text: "help", want: Request{Kind: KindHelp}},
	{name: "help upper", text: "HELP", want: Request{Kind: KindHelp}},
	{name: "help kelvin is not a keyword", text: "\u212Aelp", wantErr: []string{"contains `\u212A`"}},
	{name: "help arg", text: "help status", wantErr: []string{"`help` takes no arguments"}},
	{name: "help flag", text: "help --force", wantErr: []string{"`--force` only applies"}},
}

// selectors returns n distinct name: selectors separated by spaces.
func selectors(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("name:db-%03d-*", i)
	}
	return strings.Join(s, " ")
}

// names returns n distinct instance names separated by spaces.
func names(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("db-%03d", i)
	}
	return strings.Join(s, " ")
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(tc.text)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Parse(%q): got error %v, want %+v", tc.text, err, tc.want)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("Parse(%q): got %+v, want %+v", tc.text, got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse(%q): got %+v, want an error", tc.text, got)
			}
			checkUsageError(t, tc.text, err)
			for _, sub := range tc.wantErr {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("Parse(%q): got error %q, want it to contain %q", tc.text, err, sub)
				}
			}
			if !reflect.DeepEqual(got, Request{}) {
				t.Errorf("Parse(%q): got %+v with the error, want the zero Request", tc.text, got)
			}
		})
	}
}

// checkUsageError checks what every error of Parse must be.
func checkUsageError(t *testing.T, text string, err error) {
	t.Helper()
	var ue *UsageError
	if !errors.As(err, &ue) {
		t.Fatalf("Parse(%q): got error of type %T, want *UsageError", text, err)
	}
	if ue.Msg == "" || ue.Error() != ue.Msg {
		t.Fatalf("Parse(%q): got Msg %q and Error() %q, want the same non-empty text", text, ue.Msg, ue.Error())
	}
	if len(ue.Msg) >= 500 {
		t.Fatalf("Parse(%q): got a message of %d bytes, want < 500: %q", text, len(ue.Msg), ue.Msg)
	}
	if !strings.Contains(ue.Msg, "Usage: `") {
		t.Fatalf("Parse(%q): got message %q, want a usage line", text, ue.Msg)
	}
	for _, r := range ue.Msg {
		if r != '\n' && (r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0)) {
			t.Fatalf("Parse(%q): got message %q with control character %U", text, ue.Msg, r)
		}
	}
	// The only < > Slack may see are the escaped ones; an unescaped "<!here>"
	// in a reply would ping the channel.
	if strings.ContainsAny(ue.Msg, "<>") {
		t.Fatalf("Parse(%q): got message %q with an unescaped < or >", text, ue.Msg)
	}
}

func TestRequestStringRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range parseCases {
		if tc.wantErr != nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := tc.want.String()
			got, err := Parse(s)
			if err != nil {
				t.Fatalf("Parse(%q): got error %v, want %+v", s, err, tc.want)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Parse(%q): got %+v, want %+v", s, got, tc.want)
			}
		})
	}
}

func TestRequestString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{name: "patch", req: Request{Kind: KindPatch, Instances: []string{"a", "b"}, DryRun: true, Force: true}, want: "a b --dry-run --force"},
		{name: "rollout", req: Request{Kind: KindPatch, Instances: []string{"a"}, Canary: 3, WaitForWindow: true}, want: "a --canary 3 --wait-for-window"},
		{name: "status", req: Request{Kind: KindStatus, ID: "r-1"}, want: "status r-1"},
		{name: "list", req: Request{Kind: KindList}, want: "list"},
		{name: "list engine", req: Request{Kind: KindList, Engine: EngineInfluxDB}, want: "list influxdb"},
		{name: "list target", req: Request{Kind: KindList, Target: "eu-de"}, want: "list --target eu-de"},
		{name: "status target", req: Request{Kind: KindStatus, ID: "r-1", Target: "eu-de"}, want: "status r-1 --target eu-de"},
		{name: "patch target", req: Request{Kind: KindPatch, Instances: []string{"a"}, Force: true, Target: "eu-de"}, want: "a --force --target eu-de"},
		{name: "fleet", req: Request{Kind: KindPatch, Instances: []string{"a"}, Selectors: Selectors{All: true, Engines: []string{"cassandra"}, Names: []string{"x-*"}, Tags: []Tag{{"k", "v"}}},
			Canary: 1, WaveSize: 5, MaxErrors: 2}, want: "a all engine:cassandra name:x-* tag:k=v --canary 1 --wave-size 5 --max-errors 2"},
		{name: "list outdated", req: Request{Kind: KindList, Engine: EngineCassandra, Outdated: true, Target: "t"}, want: "list cassandra --outdated --target t"},
		{name: "help", req: Request{Kind: KindHelp}, want: "help"},
		{name: "history", req: Request{Kind: KindHistory}, want: "history"},
		{name: "history user", req: Request{Kind: KindHistory, User: "U1"}, want: "history <@U1>"},
		{name: "history instance", req: Request{Kind: KindHistory, Instance: "db-1"}, want: "history db-1"},
		{name: "zero", req: Request{}, want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.req.String(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// junkInputs make hostile command texts of about n bytes each.
var junkInputs = []func(n int) string{
	func(n int) string { return strings.Repeat("x", n) },
	func(n int) string { return strings.Repeat("<@U1>", n/5) },
	func(n int) string { return strings.Repeat("\xff", n) },
	func(n int) string { return strings.Repeat("a.", n/2) },
	func(n int) string { return strings.Repeat("é", n/2) },
	func(n int) string { return strings.Repeat("*", n) },
	func(n int) string { return strings.Repeat("-", n) },
	func(n int) string { return strings.Repeat("a ", n/2) }, // one instance after dedup, fine
	func(n int) string { return strings.Repeat("name:*?", n/7) },
	func(n int) string { return strings.Repeat("tag:k=v ", n/8) },
}

// TestParseJunkScalesLinearly checks that the parser's work on hostile
// input grows at most linearly with its length: the allocations of a
// parse of twice the text are at most about twice as many. It counts
// (testing.AllocsPerRun), so a loaded machine cannot fail it; the time is
// in BenchmarkParseJunk.
func TestParseJunkScalesLinearly(t *testing.T) { // not parallel: AllocsPerRun refuses a parallel test
	for i, junk := range junkInputs {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if _, err := Parse(junk(5000)); err != nil {
				checkUsageError(t, junk(20), err)
			}
			small := testing.AllocsPerRun(5, func() { _, _ = Parse(junk(2500)) })
			large := testing.AllocsPerRun(5, func() { _, _ = Parse(junk(5000)) })
			if large > 2.2*small+16 {
				t.Errorf("allocations for 2,500 bytes: %.0f, for 5,000: %.0f; want at most about twice as many", small, large)
			}
		})
	}
}

// BenchmarkParseJunk times a parse of each hostile input of 5,000 bytes.
func BenchmarkParseJunk(b *testing.B) {
	for i, junk := range junkInputs {
		text := junk(5000)
		b.Run(fmt.Sprint(i), func(b *testing.B) {
			for b.Loop() {
				_, _ = Parse(text)
			}
		})
	}
}

func TestHelpMentionsEverySubcommand(t *testing.T) {
	t.Parallel()
	const cmd = "/geminidb-patch"
	help := Help(cmd)
	for _, s := range Subcommands {
		t.Run(s.Name, func(t *testing.T) {
			want := cmd + " " + escape(s.Usage)
			if !strings.Contains(help, want) {
				t.Errorf("got help without %q:\n%s", want, help)
			}
			for _, ex := range s.Examples {
				if !strings.Contains(help, cmd+" "+escape(ex)) {
					t.Errorf("got help without example %q", ex)
				}
			}
		})
	}
	if strings.ContainsAny(help, "<>") {
		t.Errorf("got help with an unescaped < or >:\n%s", help)
	}
	// Slack shows at most 3,000 characters of one text object; the bot cuts there.
	if n := utf8.RuneCountInString(help); n > 2900 {
		t.Errorf("got help of %d characters, want at most 2900 (Slack's limit is 3000)", n)
	}
	for _, want := range []string{"engine:cassandra", "engine:influxdb", "name:GLOB", "tag:KEY=VALUE", "`all`", "--wave-size N", "--max-errors E", "--outdated"} {
		if !strings.Contains(help, want) {
			t.Errorf("got help without %q", want)
		}
	}
}

// TestSubcommandExamplesParse keeps the examples in the help text honest.
func TestSubcommandExamplesParse(t *testing.T) {
	t.Parallel()
	for _, s := range Subcommands {
		for _, ex := range s.Examples {
			t.Run(s.Name+"/"+ex, func(t *testing.T) {
				t.Parallel()
				r, err := Parse(ex)
				if err != nil {
					t.Fatalf("Parse(%q): got error %v, want success", ex, err)
				}
				if string(r.Kind) != s.Name {
					t.Fatalf("Parse(%q): got kind %q, want %q", ex, r.Kind, s.Name)
				}
			})
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range parseCases {
		f.Add(tc.text)
	}
	f.Fuzz(func(t *testing.T, text string) {
		r, err := Parse(text)
		if err != nil {
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("Parse(%q): got error of type %T, want *UsageError", text, err)
			}
			if ue.Msg == "" || len(ue.Msg) >= 500 || !utf8.ValidString(ue.Msg) {
				t.Fatalf("Parse(%q): got message %q (%d bytes), want valid UTF-8, non-empty, < 500 bytes", text, ue.Msg, len(ue.Msg))
			}
			if strings.ContainsAny(ue.Msg, "<>") {
				t.Fatalf("Parse(%q): got message %q with an unescaped < or >", text, ue.Msg)
			}
			return
		}
		if r.Kind == KindPatch && ((len(r.Instances) == 0 && r.Selectors.Empty()) || len(r.Instances) > MaxInstances) {
			t.Fatalf("Parse(%q): got %d instances and selectors %+v, want 1..%d instances or a selector", text, len(r.Instances), r.Selectors, MaxInstances)
		}
		if r.Selectors.count() > MaxSelectors || r.WaveSize < 0 || r.WaveSize > MaxWaveSize || r.MaxErrors < 0 || r.MaxErrors > MaxErrorBudget {
			t.Fatalf("Parse(%q): got %+v, out of bounds", text, r)
		}
		s := r.String()
		again, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q) = %+v, but Parse(%q): got error %v", text, r, s, err)
		}
		if !reflect.DeepEqual(again, r) {
			t.Fatalf("Parse(%q) = %+v, but Parse(%q): got %+v", text, r, s, again)
		}
	})
}
