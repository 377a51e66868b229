package main

import (
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/commands"
)

// manifest is the part of Slack's app manifest the code depends on.
type manifest struct {
	Features struct {
		AppHome struct {
			HomeTab bool `yaml:"home_tab_enabled"`
		} `yaml:"app_home"`
		SlashCommands []struct {
			Command      string `yaml:"command"`
			UsageHint    string `yaml:"usage_hint"`
			ShouldEscape bool   `yaml:"should_escape"`
		} `yaml:"slash_commands"`
		BotUser struct {
			DisplayName string `yaml:"display_name"`
		} `yaml:"bot_user"`
	} `yaml:"features"`
	OAuth struct {
		Scopes struct {
			Bot []string `yaml:"bot"`
		} `yaml:"scopes"`
	} `yaml:"oauth_config"`
	Settings struct {
		Interactivity struct {
			IsEnabled bool `yaml:"is_enabled"`
		} `yaml:"interactivity"`
		SocketMode bool `yaml:"socket_mode_enabled"`
		Events     struct {
			BotEvents []string `yaml:"bot_events"`
		} `yaml:"event_subscriptions"`
	} `yaml:"settings"`
}

func TestManifestMatchesCode(t *testing.T) {
	raw, err := os.ReadFile("manifest.yml")
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := yaml.Unmarshal(raw, &m); err != nil {
		t.Fatalf("manifest.yml is not valid YAML: %v", err)
	}
	var cmds []string
	for _, c := range m.Features.SlashCommands {
		cmds = append(cmds, c.Command)
	}
	if !slices.Equal(cmds, []string{commands.Command}) {
		t.Errorf("manifest slash commands = %v, want exactly [%s] (commands.Command)", cmds, commands.Command)
	}
	if !m.Settings.SocketMode {
		t.Error("manifest socket_mode_enabled = false, want true: the bot only speaks Socket Mode")
	}
	if !m.Settings.Interactivity.IsEnabled {
		t.Error("manifest interactivity.is_enabled = false, want true: the plan has buttons")
	}
	for _, scope := range []string{"commands", "chat:write", "usergroups:read"} {
		if !slices.Contains(m.OAuth.Scopes.Bot, scope) {
			t.Errorf("manifest bot scopes %v lack %q, which the bot uses", m.OAuth.Scopes.Bot, scope)
		}
	}
	if !m.Features.AppHome.HomeTab || !slices.Contains(m.Settings.Events.BotEvents, "app_home_opened") {
		t.Error("manifest must enable the Home tab and subscribe to app_home_opened: the bot publishes an App Home")
	}
	for _, c := range m.Features.SlashCommands {
		if !c.ShouldEscape {
			t.Error("manifest should_escape = false, want true: history matches a mentioned person by the user ID Slack sends only when escaping")
		}
		for _, sub := range commands.Subcommands {
			if sub.Name != string(commands.KindPatch) && !strings.Contains(c.UsageHint, sub.Name) {
				t.Errorf("manifest usage_hint %q does not name %s", c.UsageHint, sub.Name)
			}
		}
	}
	if m.Features.BotUser.DisplayName == "" {
		t.Error("manifest has no bot user; chat:write needs one")
	}
}
