package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/secret"
)

// DefaultTargetName is the name of the one target the GEMINIDB_* variables
// define when there is no BOT_TARGETS_FILE.
const DefaultTargetName = "default"

// Target is one GeminiDB project in one region that the bot patches: its
// API, its credentials, the channels where it is the default target, who
// approves its patches, and where and by whom it may be used.
type Target struct {
	Name         string
	Region       string // "" for the target the GEMINIDB_* variables define
	Endpoint     string
	ProjectID    string
	BatchEngines []string
	Auth         TargetAuth
	Channels     []string // channels where this target is the default
	Approvers    []string // the file's approvers, or BOT_APPROVERS when it gives none
	// AllowedChannels, when not empty, are the only channels where the
	// target may be used (--target from elsewhere is refused).
	AllowedChannels []string
	// AllowedUsers, when not empty, narrows BOT_ALLOWED_USERS for this
	// target: user (U…/W…) or user-group (S…) IDs.
	AllowedUsers []string
}

// Label names the target in messages and logs: "prod-eu-de (eu-de)".
func (t Target) Label() string {
	if t.Region == "" {
		return t.Name
	}
	return t.Name + " (" + t.Region + ")"
}

// TargetAuth is a target's one authentication mode and its secrets, read
// from the variables or files the configuration names.
type TargetAuth struct {
	Mode        AuthMode
	Token       secret.Secret
	AccessKey   secret.Secret
	SecretKey   secret.Secret
	IAMEndpoint string
	IAMUsername string
	IAMPassword secret.Secret
	IAMDomain   string
	// From says where the secrets were read, by the names of the
	// variables or files (never a value), for the start-up log.
	From []string
}

// The YAML shape of BOT_TARGETS_FILE (README.md, "Targets"). Unknown keys
// are errors.
type targetsDoc struct {
	Targets []targetDoc `yaml:"targets"`
}

type targetDoc struct {
	Name            string    `yaml:"name"`
	Region          string    `yaml:"region"`
	Endpoint        string    `yaml:"endpoint"`
	ProjectID       string    `yaml:"project_id"`
	BatchEngines    []string  `yaml:"batch_engines"`
	Auth            *authDoc  `yaml:"auth"`
	Channels        []string  `yaml:"channels"`
	Approvers       *[]string `yaml:"approvers"` // nil: BOT_APPROVERS; [] : none
	AllowedChannels []string  `yaml:"allowed_channels"`
	AllowedUsers    []string  `yaml:"allowed_users"`
}

type authDoc struct {
	TokenEnv      string  `yaml:"token_env"`
	TokenFile     string  `yaml:"token_file"`
	AccessKeyEnv  string  `yaml:"access_key_env"`
	AccessKeyFile string  `yaml:"access_key_file"`
	SecretKeyEnv  string  `yaml:"secret_key_env"`
	SecretKeyFile string  `yaml:"secret_key_file"`
	IAM           *iamDoc `yaml:"iam"`
}

type iamDoc struct {
	Endpoint     string `yaml:"endpoint"`
	Username     string `yaml:"username"`
	PasswordEnv  string `yaml:"password_env"`
	PasswordFile string `yaml:"password_file"`
	Domain       string `yaml:"domain"`
}

// loadTargets returns the targets of c: those of BOT_TARGETS_FILE, with
// secrets from c.LookupEnv and files, or else the one the GEMINIDB_*
// variables define (checked by validateGeminiDB).
func (c *Config) loadTargets() ([]Target, Problems) {
	if c.TargetsFile == "" {
		return []Target{c.envTarget()}, nil
	}
	raw, err := os.ReadFile(c.TargetsFile)
	if err != nil {
		return nil, Problems{&TargetsFileError{File: c.TargetsFile, Problem: "cannot be read: " + fileProblem(err)}}
	}
	l := &targetsLoader{file: c.TargetsFile, dir: filepath.Dir(c.TargetsFile), lookup: c.lookupEnv}
	targets := l.load(c, raw)
	return targets, l.problems
}

// envTarget is the one target the GEMINIDB_* variables define.
func (c *Config) envTarget() Target {
	mode, _ := c.AuthMode()
	t := Target{
		Name: DefaultTargetName, Endpoint: c.GeminiDBEndpoint, ProjectID: c.GeminiDBProjectID,
		BatchEngines: c.GeminiDBBatchEngines, Approvers: c.Approvers,
		Auth: TargetAuth{
			Mode: mode, Token: c.GeminiDBAuthToken, AccessKey: c.GeminiDBAccessKey, SecretKey: c.GeminiDBSecretKey,
			IAMEndpoint: c.GeminiDBIAMEndpoint, IAMUsername: c.GeminiDBIAMUsername, IAMPassword: c.GeminiDBIAMPassword, IAMDomain: c.GeminiDBIAMDomain,
		},
	}
	switch mode {
	case AuthToken:
		t.Auth.From = []string{"GEMINIDB_AUTH_TOKEN"}
	case AuthAKSK:
		t.Auth.From = []string{"GEMINIDB_ACCESS_KEY", "GEMINIDB_SECRET_KEY"}
	case AuthIAM:
		t.Auth.From = []string{"GEMINIDB_IAM_PASSWORD"}
	}
	return t
}

// targetsLoader reads one BOT_TARGETS_FILE, collecting every problem.
type targetsLoader struct {
	file     string
	dir      string // secret files are found relative to the targets file
	lookup   func(string) (string, bool)
	problems Problems
}

var (
	// targetNameRe is what --target accepts (commands.Parse), so every
	// target can be named in a command.
	targetNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	// envNameRe is the shape of an environment variable's name.
	envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// keyRe is the shape of the format's keys; an unknown key of this
	// shape is repeated in the error, any other is not.
	keyRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)
)

func (l *targetsLoader) fileErr(line int, field, problem string) {
	l.problems = append(l.problems, &TargetsFileError{File: l.file, Field: field, Line: line, Problem: problem})
}

func (l *targetsLoader) load(c *Config, raw []byte) []Target {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		// The parser's messages name a line and what it expected, not the
		// text it found.
		l.fileErr(0, "", "is not valid YAML: "+strings.TrimPrefix(err.Error(), "yaml: "))
		return nil
	}
	if len(root.Content) == 0 {
		l.fileErr(0, "targets", "is empty: list the targets under targets:")
		return nil
	}
	// Every key is checked against the format first, so an unknown key is
	// reported with its target and field, and a value of the wrong shape
	// without repeating it.
	doc := root.Content[0]
	l.checkShape(doc, reflect.TypeFor[targetsDoc](), "", "")
	if len(l.problems) > 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var td targetsDoc
	if err := dec.Decode(&td); err != nil {
		// checkShape passed, so this should not happen; yaml's message
		// may quote a value, so it is not repeated.
		l.fileErr(0, "", "does not have the expected shape (see README.md, Targets)")
		return nil
	}
	if len(td.Targets) == 0 {
		l.fileErr(0, "targets", "lists no target")
		return nil
	}
	nodes := listItems(doc, "targets")
	targets := make([]Target, 0, len(td.Targets))
	names := map[string]string{}    // lowercased name → target
	channels := map[string]string{} // channel → target
	for i, d := range td.Targets {
		var node *yaml.Node
		if i < len(nodes) {
			node = nodes[i]
		}
		who := fmt.Sprintf("#%d", i+1)
		if targetNameRe.MatchString(d.Name) {
			who = fmt.Sprintf("%q", d.Name)
		}
		bad := func(field, problem string) {
			l.problems = append(l.problems, &TargetsFileError{File: l.file, Target: who, Field: field, Line: fieldLine(node, field), Problem: problem})
		}
		t := l.target(c, d, bad)
		if t.Name != "" {
			key := strings.ToLower(t.Name)
			if other, dup := names[key]; dup {
				bad("name", fmt.Sprintf("is also the name of target %s (names are compared ignoring case)", other))
			}
			names[key] = fmt.Sprintf("#%d", i+1)
		}
		for _, ch := range t.Channels {
			if other, dup := channels[ch]; dup {
				bad("channels", fmt.Sprintf("%s is also a channel of target %s; a channel can have only one default target", ch, other))
			}
			channels[ch] = who
		}
		targets = append(targets, t)
	}
	return targets
}

// target checks one entry of the file and reads its secrets; every problem
// goes to bad.
func (l *targetsLoader) target(c *Config, d targetDoc, bad func(field, problem string)) Target {
	t := Target{Name: d.Name, Region: strings.TrimSpace(d.Region), ProjectID: strings.TrimSpace(d.ProjectID)}
	switch {
	case d.Name == "":
		bad("name", "is required: the name people give with --target, e.g. prod-eu-de")
	case !targetNameRe.MatchString(d.Name):
		bad("name", "must be 1 to 64 letters, digits, - or _, starting with a letter or digit (people type it after --target)")
		t.Name = ""
	}
	switch {
	case t.Region == "":
		bad("region", "is required, e.g. eu-de (it is shown with the name in every message)")
	case strings.ContainsFunc(t.Region, func(r rune) bool { return r <= ' ' }):
		bad("region", "must be a region name without spaces, e.g. eu-de")
	}
	switch {
	case d.Endpoint == "":
		bad("endpoint", "is required: the GeminiDB API base URL, e.g. https://gaussdb-nosql.eu-de.otc.t-systems.com")
	case checkURL(d.Endpoint) != nil:
		bad("endpoint", checkURL(d.Endpoint).Error())
	default:
		t.Endpoint = strings.TrimRight(d.Endpoint, "/")
	}
	switch {
	case t.ProjectID == "":
		bad("project_id", "is required: the project ID used in every API path")
	case strings.ContainsAny(t.ProjectID, "/?# "):
		bad("project_id", "must be a project ID (no spaces or slashes)")
	}
	t.BatchEngines = []string{"cassandra", "influxdb"}
	if d.BatchEngines != nil {
		if engines, ok := cleanEngines(d.BatchEngines); ok {
			t.BatchEngines = engines
		} else {
			bad("batch_engines", "must name at least one engine, e.g. [cassandra, influxdb]")
		}
	}
	t.Auth = l.auth(d.Auth, bad)
	t.AllowedChannels = l.channelList(c, "allowed_channels", d.AllowedChannels, bad)
	t.Channels = l.channelList(c, "channels", d.Channels, bad)
	for _, ch := range t.Channels {
		if len(t.AllowedChannels) > 0 && !slices.Contains(t.AllowedChannels, ch) {
			bad("channels", fmt.Sprintf("%s is not in the target's allowed_channels, so it cannot be its default there", ch))
		}
	}
	t.Approvers = c.Approvers
	if d.Approvers != nil {
		t.Approvers = userList("approvers", *d.Approvers, bad)
	}
	t.AllowedUsers = userList("allowed_users", d.AllowedUsers, bad)
	return t
}

// channelList checks a list of channel IDs of a target: Slack's shape, and
// within BOT_ALLOWED_CHANNELS when that is set.
func (l *targetsLoader) channelList(c *Config, field string, in []string, bad func(field, problem string)) []string {
	out := cleanList(in)
	for _, ch := range out {
		if !isSlackID(ch, "CGD") {
			bad(field, fmt.Sprintf("%q is not a Slack channel ID (C…/G…)", ch))
		} else if len(c.AllowedChannels) > 0 && !slices.Contains(c.AllowedChannels, ch) {
			bad(field, fmt.Sprintf("%s is not in BOT_ALLOWED_CHANNELS, so the command does not work there", ch))
		}
	}
	return out
}

// userList checks a list of user or user-group IDs of a target.
func userList(field string, in []string, bad func(field, problem string)) []string {
	out := cleanList(in)
	for _, u := range out {
		if !isSlackID(u, "UWS") {
			bad(field, fmt.Sprintf("%q is not a Slack user ID (U…/W…) or user-group ID (S…)", u))
		}
	}
	return out
}

// auth checks a target's auth: exactly one mode, each secret from either a
// variable or a file, and reads the secrets.
func (l *targetsLoader) auth(d *authDoc, bad func(field, problem string)) TargetAuth {
	var a TargetAuth
	if d == nil {
		bad("auth", "is required: give {token_env} or {token_file}, {access_key_env, secret_key_env}, or {iam: {endpoint, username, password_env, domain}}")
		return a
	}
	var modes []string
	if d.TokenEnv != "" || d.TokenFile != "" {
		modes = append(modes, "token_env/token_file")
	}
	if d.AccessKeyEnv != "" || d.AccessKeyFile != "" || d.SecretKeyEnv != "" || d.SecretKeyFile != "" {
		modes = append(modes, "access_key_*/secret_key_*")
	}
	if d.IAM != nil {
		modes = append(modes, "iam")
	}
	switch len(modes) {
	case 0:
		bad("auth", "names no authentication: give {token_env} or {token_file}, {access_key_env, secret_key_env}, or {iam: {…}}")
		return a
	case 1:
	default:
		bad("auth", "set only one authentication mode, not "+strings.Join(modes, " and "))
		return a
	}
	switch {
	case d.TokenEnv != "" || d.TokenFile != "":
		a.Mode = AuthToken
		a.Token = l.secret("auth.token", d.TokenEnv, d.TokenFile, &a, bad)
	case d.IAM != nil:
		a.Mode = AuthIAM
		iam := d.IAM
		switch {
		case iam.Endpoint == "":
			bad("auth.iam.endpoint", "is required, e.g. https://iam.eu-de.otc.t-systems.com")
		case checkURL(iam.Endpoint) != nil:
			bad("auth.iam.endpoint", checkURL(iam.Endpoint).Error())
		}
		if iam.Username == "" {
			bad("auth.iam.username", "is required")
		}
		if iam.Domain == "" {
			bad("auth.iam.domain", "is required: the account (domain) name")
		}
		a.IAMEndpoint, a.IAMUsername, a.IAMDomain = iam.Endpoint, iam.Username, iam.Domain
		a.IAMPassword = l.secret("auth.iam.password", iam.PasswordEnv, iam.PasswordFile, &a, bad)
	default:
		a.Mode = AuthAKSK
		a.AccessKey = l.secret("auth.access_key", d.AccessKeyEnv, d.AccessKeyFile, &a, bad)
		a.SecretKey = l.secret("auth.secret_key", d.SecretKeyEnv, d.SecretKeyFile, &a, bad)
	}
	return a
}

// secret reads one secret from the variable env or the file file (exactly
// one of them given; field is their common prefix, e.g. auth.token) and
// records where it came from in a.From. Problems never repeat env, file or
// the value: a secret pasted into the file by mistake stays unprinted.
func (l *targetsLoader) secret(field, env, file string, a *TargetAuth, bad func(field, problem string)) secret.Secret {
	switch {
	case env != "" && file != "":
		bad(field+"_env", fmt.Sprintf("give %s_env or %s_file, not both", lastPart(field), lastPart(field)))
	case env == "" && file == "":
		bad(field+"_env", fmt.Sprintf("is required (or %s_file)", lastPart(field)))
	case env != "":
		if !envNameRe.MatchString(env) {
			bad(field+"_env", "is not the name of an environment variable (the file names the variables that hold secrets, never a secret itself)")
			return ""
		}
		v, ok := l.lookup(env)
		if !ok || strings.TrimSpace(v) == "" {
			bad(field+"_env", "names an environment variable that is not set or empty")
			return ""
		}
		a.From = append(a.From, "$"+env)
		return secret.Secret(strings.TrimSpace(v))
	default:
		path := file
		if !filepath.IsAbs(path) {
			path = filepath.Join(l.dir, path)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			bad(field+"_file", "names a file that "+fileProblem(err))
			return ""
		}
		v := strings.TrimSpace(string(raw))
		if v == "" {
			bad(field+"_file", "names a file that is empty")
			return ""
		}
		a.From = append(a.From, path)
		return secret.Secret(v)
	}
	return ""
}

// fileProblem says why a file could not be read, without its path (which
// the caller knows, and which may be a secret pasted in the wrong field).
func fileProblem(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "does not exist"
	case errors.Is(err, fs.ErrPermission):
		return "cannot be read (permission denied)"
	default:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return "cannot be read: " + pe.Err.Error()
		}
		return "cannot be read"
	}
}

func lastPart(field string) string { return field[strings.LastIndexByte(field, '.')+1:] }
