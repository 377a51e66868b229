package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/bot"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/internal/secret"
	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// DefaultTargetName is the name of the one target the GEMINIDB_* variables
// define when there is no BOT_TARGETS_FILE.
const DefaultTargetName = "default"

// Target is one GeminiDB project in one region that the bot patches: its
// API, its credentials, the channels where it is the default target and
// who approves its patches.
type Target struct {
	Name         string
	Region       string // "" for the target the GEMINIDB_* variables define
	Endpoint     string
	ProjectID    string
	BatchEngines []string
	Auth         TargetAuth
	Channels     []string // channels where this target is the default
	Approvers    []string // the file's approvers, or BOT_APPROVERS when it gives none
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

// TargetsFileError is a problem with BOT_TARGETS_FILE. It names the file,
// the target and the field, and never contains a value of a secret, nor
// of a field that names one (a secret pasted there by mistake).
type TargetsFileError struct {
	File    string // the path BOT_TARGETS_FILE gives
	Target  string // `"prod-eu-de"`, or `#2` for a target without a name; "" for the file as a whole
	Field   string // e.g. "auth.token_env"; "" for the target or the file as a whole
	Line    int    // in the file; 0 when not known
	Problem string
}

// Error renders "BOT_TARGETS_FILE (path): target "x": field auth.token_env (line 7): problem".
func (e *TargetsFileError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "BOT_TARGETS_FILE (%s):", e.File)
	if e.Target != "" {
		fmt.Fprintf(&b, " target %s:", e.Target)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, " field %s", e.Field)
		if e.Line > 0 {
			fmt.Fprintf(&b, " (line %d)", e.Line)
		}
		b.WriteString(":")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, " line %d:", e.Line)
	}
	return b.String() + " " + e.Problem
}

// The YAML shape of BOT_TARGETS_FILE (README.md, "Targets"). Unknown keys
// are errors.
type targetsDoc struct {
	Targets []targetDoc `yaml:"targets"`
}

type targetDoc struct {
	Name         string    `yaml:"name"`
	Region       string    `yaml:"region"`
	Endpoint     string    `yaml:"endpoint"`
	ProjectID    string    `yaml:"project_id"`
	BatchEngines []string  `yaml:"batch_engines"`
	Auth         *authDoc  `yaml:"auth"`
	Channels     []string  `yaml:"channels"`
	Approvers    *[]string `yaml:"approvers"` // nil: BOT_APPROVERS; [] : none
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

// loadTargets returns the targets of c: those of BOT_TARGETS_FILE, read
// with readFile and with secrets from lookup, or else the one the GEMINIDB_*
// variables define. c must have been validated.
func loadTargets(c *Config, lookup func(string) (string, bool), readFile func(string) ([]byte, error)) ([]Target, error) {
	if c.TargetsFile == "" {
		return []Target{envTarget(c)}, nil
	}
	raw, err := readFile(c.TargetsFile)
	if err != nil {
		return nil, &TargetsFileError{File: c.TargetsFile, Problem: "cannot be read: " + fileProblem(err)}
	}
	l := &targetsLoader{file: c.TargetsFile, dir: filepath.Dir(c.TargetsFile), lookup: lookup, readFile: readFile}
	return l.load(c, raw)
}

// envTarget is the one target the GEMINIDB_* variables define.
func envTarget(c *Config) Target {
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

// validateGeminiDB checks the GEMINIDB_* variables: they define the one
// target unless BOT_TARGETS_FILE names a file of targets, and then they
// must not define one too.
func (c *Config) validateGeminiDB() error {
	bad := func(v, p string) error { return &ConfigError{Variable: v, Problem: p} }
	if c.TargetsFile != "" {
		if c.GeminiDBEndpoint != "" || c.GeminiDBProjectID != "" {
			return bad("BOT_TARGETS_FILE, GEMINIDB_ENDPOINT, GEMINIDB_PROJECT_ID", "set either BOT_TARGETS_FILE (several targets) or GEMINIDB_ENDPOINT and GEMINIDB_PROJECT_ID (one target), not both")
		}
		return nil
	}
	if strings.TrimSpace(c.GeminiDBEndpoint) == "" {
		return bad("GEMINIDB_ENDPOINT", "is required but not set (or set BOT_TARGETS_FILE to a file of targets)")
	}
	if strings.TrimSpace(c.GeminiDBProjectID) == "" {
		return bad("GEMINIDB_PROJECT_ID", "is required but not set (or set BOT_TARGETS_FILE to a file of targets)")
	}
	if err := checkURL(c.GeminiDBEndpoint); err != nil {
		return bad("GEMINIDB_ENDPOINT", err.Error())
	}
	c.GeminiDBEndpoint = strings.TrimRight(c.GeminiDBEndpoint, "/")
	if strings.ContainsAny(c.GeminiDBProjectID, "/?# ") {
		return bad("GEMINIDB_PROJECT_ID", "must be a project ID (no spaces or slashes)")
	}
	engines, ok := cleanEngines(c.GeminiDBBatchEngines)
	if !ok {
		return bad("GEMINIDB_BATCH_ENGINES", "must name at least one engine, e.g. cassandra,influxdb")
	}
	c.GeminiDBBatchEngines = engines
	_, err := c.AuthMode()
	return err
}

// cleanEngines trims and lowercases engine names; ok is false when none is left.
func cleanEngines(in []string) ([]string, bool) {
	engines := cleanList(in)
	for i, e := range engines {
		engines[i] = strings.ToLower(e)
	}
	return engines, len(engines) > 0
}

// Label names the target in messages and logs: "prod-eu-de (eu-de)".
func (t Target) Label() string {
	if t.Region == "" {
		return t.Name
	}
	return t.Name + " (" + t.Region + ")"
}

// targetsLoader reads one BOT_TARGETS_FILE.
type targetsLoader struct {
	file     string
	dir      string // secret files are found relative to the targets file
	lookup   func(string) (string, bool)
	readFile func(string) ([]byte, error)
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

func (l *targetsLoader) load(c *Config, raw []byte) ([]Target, error) {
	fileErr := func(line int, field, problem string) error {
		return &TargetsFileError{File: l.file, Field: field, Line: line, Problem: problem}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		// The parser's messages name a line and what it expected, not the
		// text it found.
		return nil, fileErr(0, "", "is not valid YAML: "+strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(root.Content) == 0 {
		return nil, fileErr(0, "targets", "is empty: list the targets under targets:")
	}
	// Every key is checked against the format first, so an unknown key is
	// reported with its target and field, and a value of the wrong shape
	// without repeating it.
	doc := root.Content[0]
	if err := l.checkShape(doc, reflect.TypeFor[targetsDoc](), "", ""); err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var td targetsDoc
	if err := dec.Decode(&td); err != nil {
		// checkShape passed, so this should not happen; yaml's message
		// may quote a value, so it is not repeated.
		return nil, fileErr(0, "", "does not have the expected shape (see README.md, Targets)")
	}
	if len(td.Targets) == 0 {
		return nil, fileErr(0, "targets", "lists no target")
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
		bad := func(field, problem string) error {
			return &TargetsFileError{File: l.file, Target: who, Field: field, Line: fieldLine(node, field), Problem: problem}
		}
		t, err := l.target(c, d, bad)
		if err != nil {
			return nil, err
		}
		key := strings.ToLower(t.Name)
		if other, dup := names[key]; dup {
			return nil, bad("name", fmt.Sprintf("is also the name of target %s (names are compared ignoring case)", other))
		}
		names[key] = fmt.Sprintf("#%d", i+1)
		for _, ch := range t.Channels {
			if other, dup := channels[ch]; dup {
				return nil, bad("channels", fmt.Sprintf("%s is also a channel of target %s; a channel can have only one default target", ch, other))
			}
			channels[ch] = who
		}
		targets = append(targets, t)
	}
	return targets, nil
}

// target checks one entry of the file and reads its secrets.
func (l *targetsLoader) target(c *Config, d targetDoc, bad func(field, problem string) error) (Target, error) {
	t := Target{Name: d.Name, Region: strings.TrimSpace(d.Region), ProjectID: strings.TrimSpace(d.ProjectID)}
	switch {
	case d.Name == "":
		return t, bad("name", "is required: the name people give with --target, e.g. prod-eu-de")
	case !targetNameRe.MatchString(d.Name):
		return t, bad("name", "must be 1 to 64 letters, digits, - or _, starting with a letter or digit (people type it after --target)")
	case t.Region == "":
		return t, bad("region", "is required, e.g. eu-de (it is shown with the name in every message)")
	case strings.ContainsFunc(t.Region, func(r rune) bool { return r <= ' ' }):
		return t, bad("region", "must be a region name without spaces, e.g. eu-de")
	case d.Endpoint == "":
		return t, bad("endpoint", "is required: the GeminiDB API base URL, e.g. https://gaussdb-nosql.eu-de.otc.t-systems.com")
	}
	if err := checkURL(d.Endpoint); err != nil {
		return t, bad("endpoint", err.Error())
	}
	t.Endpoint = strings.TrimRight(d.Endpoint, "/")
	if t.ProjectID == "" {
		return t, bad("project_id", "is required: the project ID used in every API path")
	}
	if strings.ContainsAny(t.ProjectID, "/?# ") {
		return t, bad("project_id", "must be a project ID (no spaces or slashes)")
	}
	t.BatchEngines = []string{"cassandra", "influxdb"}
	if d.BatchEngines != nil {
		engines, ok := cleanEngines(d.BatchEngines)
		if !ok {
			return t, bad("batch_engines", "must name at least one engine, e.g. [cassandra, influxdb]")
		}
		t.BatchEngines = engines
	}
	auth, err := l.auth(d.Auth, bad)
	if err != nil {
		return t, err
	}
	t.Auth = auth
	t.Channels = cleanList(d.Channels)
	for _, ch := range t.Channels {
		if !isSlackID(ch, "CGD") {
			return t, bad("channels", fmt.Sprintf("%q is not a Slack channel ID (C…/G…)", ch))
		}
		if len(c.AllowedChannels) > 0 && !slices.Contains(c.AllowedChannels, ch) {
			return t, bad("channels", fmt.Sprintf("%s is not in BOT_ALLOWED_CHANNELS, so the command does not work there", ch))
		}
	}
	t.Approvers = c.Approvers
	if d.Approvers != nil {
		t.Approvers = cleanList(*d.Approvers)
		for _, u := range t.Approvers {
			if !isSlackID(u, "UWS") {
				return t, bad("approvers", fmt.Sprintf("%q is not a Slack user ID (U…/W…) or user-group ID (S…)", u))
			}
		}
	}
	return t, nil
}

// auth checks a target's auth: exactly one mode, each secret from either a
// variable or a file, and reads the secrets.
func (l *targetsLoader) auth(d *authDoc, bad func(field, problem string) error) (TargetAuth, error) {
	var a TargetAuth
	if d == nil {
		return a, bad("auth", "is required: give {token_env} or {token_file}, {access_key_env, secret_key_env}, or {iam: {endpoint, username, password_env, domain}}")
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
		return a, bad("auth", "names no authentication: give {token_env} or {token_file}, {access_key_env, secret_key_env}, or {iam: {…}}")
	case 1:
	default:
		return a, bad("auth", "set only one authentication mode, not "+strings.Join(modes, " and "))
	}
	var err error
	switch {
	case d.TokenEnv != "" || d.TokenFile != "":
		a.Mode = AuthToken
		a.Token, err = l.secret("auth.token", d.TokenEnv, d.TokenFile, &a, bad)
	case d.IAM != nil:
		a.Mode = AuthIAM
		iam := d.IAM
		switch {
		case iam.Endpoint == "":
			return a, bad("auth.iam.endpoint", "is required, e.g. https://iam.eu-de.otc.t-systems.com")
		case checkURL(iam.Endpoint) != nil:
			return a, bad("auth.iam.endpoint", checkURL(iam.Endpoint).Error())
		case iam.Username == "":
			return a, bad("auth.iam.username", "is required")
		case iam.Domain == "":
			return a, bad("auth.iam.domain", "is required: the account (domain) name")
		}
		a.IAMEndpoint, a.IAMUsername, a.IAMDomain = iam.Endpoint, iam.Username, iam.Domain
		a.IAMPassword, err = l.secret("auth.iam.password", iam.PasswordEnv, iam.PasswordFile, &a, bad)
	default:
		a.Mode = AuthAKSK
		if a.AccessKey, err = l.secret("auth.access_key", d.AccessKeyEnv, d.AccessKeyFile, &a, bad); err == nil {
			a.SecretKey, err = l.secret("auth.secret_key", d.SecretKeyEnv, d.SecretKeyFile, &a, bad)
		}
	}
	return a, err
}

// secret reads one secret from the variable env or the file file (exactly
// one of them given; field is their common prefix, e.g. auth.token) and
// records where it came from in a.From. Errors never repeat env, file or
// the value: a secret pasted into the file by mistake stays unprinted.
func (l *targetsLoader) secret(field, env, file string, a *TargetAuth, bad func(field, problem string) error) (secret.Secret, error) {
	switch {
	case env != "" && file != "":
		return "", bad(field+"_env", fmt.Sprintf("give %s_env or %s_file, not both", lastPart(field), lastPart(field)))
	case env == "" && file == "":
		return "", bad(field+"_env", fmt.Sprintf("is required (or %s_file)", lastPart(field)))
	case env != "":
		if !envNameRe.MatchString(env) {
			return "", bad(field+"_env", "is not the name of an environment variable (the file names the variables that hold secrets, never a secret itself)")
		}
		v, ok := l.lookup(env)
		if !ok || strings.TrimSpace(v) == "" {
			return "", bad(field+"_env", "names an environment variable that is not set or empty")
		}
		a.From = append(a.From, "$"+env)
		return secret.Secret(strings.TrimSpace(v)), nil
	default:
		path := file
		if !filepath.IsAbs(path) {
			path = filepath.Join(l.dir, path)
		}
		raw, err := l.readFile(path)
		if err != nil {
			return "", bad(field+"_file", "names a file that "+fileProblem(err))
		}
		v := strings.TrimSpace(string(raw))
		if v == "" {
			return "", bad(field+"_file", "names a file that is empty")
		}
		a.From = append(a.From, path)
		return secret.Secret(v), nil
	}
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

// checkShape compares node with the Go type t of the file's format: every
// mapping key must be a field, mappings where structs are, lists where
// slices are, plain values where strings are. path is the field's path
// (e.g. auth.iam), who the target it belongs to once known. Problems are
// reported without the offending value.
func (l *targetsLoader) checkShape(node *yaml.Node, t reflect.Type, path, who string) error {
	for node.Kind == yaml.AliasNode {
		node = node.Alias
	}
	bad := func(n *yaml.Node, field, problem string) error {
		return &TargetsFileError{File: l.file, Target: who, Field: field, Line: n.Line, Problem: problem}
	}
	field := path
	if field == "" {
		field = "(top level)"
	}
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" && t.Kind() != reflect.Struct {
		return nil // an empty value: checked as missing later
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if node.Kind != yaml.MappingNode {
			return bad(node, field, "must be a mapping of keys to values")
		}
		known := map[string]reflect.Type{}
		var keys []string
		for i := range t.NumField() {
			f := t.Field(i)
			k := strings.Split(f.Tag.Get("yaml"), ",")[0]
			known[k] = f.Type
			keys = append(keys, k)
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, v := node.Content[i], node.Content[i+1]
			name := join(path, k.Value)
			ft, ok := known[k.Value]
			if k.Kind != yaml.ScalarNode || !ok {
				if k.Kind == yaml.ScalarNode && keyRe.MatchString(k.Value) {
					return bad(k, name, "is an unknown key; the keys here are "+strings.Join(keys, ", "))
				}
				// Not repeated: a key of another shape may be a secret
				// pasted in the wrong place.
				return bad(k, field, "has an unknown key; the keys here are "+strings.Join(keys, ", "))
			}
			if seen[k.Value] {
				return bad(k, name, "is given twice")
			}
			seen[k.Value] = true
			if path == "" && k.Value == "targets" {
				if err := l.checkTargets(v); err != nil {
					return err
				}
				continue
			}
			if err := l.checkShape(v, ft, name, who); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if node.Kind != yaml.SequenceNode {
			return bad(node, field, "must be a list, e.g. [a, b]")
		}
		for _, item := range node.Content {
			if err := l.checkShape(item, t.Elem(), path, who); err != nil {
				return err
			}
		}
		return nil
	default: // string
		if node.Kind != yaml.ScalarNode {
			return bad(node, field, "must be a single value, not a list or a mapping")
		}
		return nil
	}
}

// checkTargets checks the shape of each entry of targets:, naming it.
func (l *targetsLoader) checkTargets(node *yaml.Node) error {
	for node.Kind == yaml.AliasNode {
		node = node.Alias
	}
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		return nil // reported as "lists no target"
	}
	if node.Kind != yaml.SequenceNode {
		return &TargetsFileError{File: l.file, Field: "targets", Line: node.Line, Problem: "must be a list of targets (- name: …)"}
	}
	for i, item := range node.Content {
		who := fmt.Sprintf("#%d", i+1)
		if n := mapValue(item, "name"); n != nil && targetNameRe.MatchString(n.Value) {
			who = fmt.Sprintf("%q", n.Value)
		}
		if err := l.checkShape(item, reflect.TypeFor[targetDoc](), "", who); err != nil {
			return err
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapValue returns the value of key in a mapping node, or nil.
func mapValue(node *yaml.Node, key string) *yaml.Node {
	for node != nil && node.Kind == yaml.AliasNode {
		node = node.Alias
	}
	if node == nil || node.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		if node.Content[i].Value == key {
			v := node.Content[i+1]
			for v.Kind == yaml.AliasNode {
				v = v.Alias
			}
			return v
		}
	}
	return nil
}

// listItems returns the entries of the list under key in a mapping node.
func listItems(node *yaml.Node, key string) []*yaml.Node {
	if v := mapValue(node, key); v != nil && v.Kind == yaml.SequenceNode {
		return v.Content
	}
	return nil
}

// fieldLine is the line of field (e.g. auth.iam.endpoint) in a target's
// node, or of the deepest part of it that is there; 0 without a node.
func fieldLine(node *yaml.Node, field string) int {
	if node == nil {
		return 0
	}
	line := node.Line
	for _, part := range strings.Split(field, ".") {
		for i := 0; node.Kind == yaml.MappingNode && i+1 < len(node.Content); i += 2 {
			if node.Content[i].Value == part {
				line = node.Content[i].Line
				node = node.Content[i+1]
				break
			}
		}
	}
	return line
}

// targetsLogValue describes the targets for the start-up log line: where
// their secrets come from, never the secrets.
func targetsLogValue(ts []Target) []map[string]any {
	out := make([]map[string]any, len(ts))
	for i, t := range ts {
		out[i] = map[string]any{
			"name": t.Name, "region": t.Region, "endpoint": t.Endpoint, "project_id": t.ProjectID,
			"batch_engines": t.BatchEngines, "auth_mode": string(t.Auth.Mode), "secrets_from": t.Auth.From,
			"iam_endpoint": t.Auth.IAMEndpoint, "channels": t.Channels, "approvers": t.Approvers,
		}
	}
	return out
}

// newTargets builds the bot's targets, each with a client of its own whose
// API calls are observed in metrics under the target's name.
func newTargets(cfg Config, metrics *bot.Metrics) ([]bot.Target, []*upgrade.Client, error) {
	var targets []bot.Target
	var dbs []*upgrade.Client
	for _, t := range cfg.Targets {
		db, err := NewGeminiDB(t, func(call string, d time.Duration, err error) {
			result := "ok"
			if err != nil {
				result = "error"
			}
			metrics.APILatency.WithLabelValues(t.Name, call, result).Observe(d.Seconds())
		})
		if err != nil {
			return nil, nil, err
		}
		targets = append(targets, bot.Target{
			Name: t.Name, Region: t.Region, ProjectID: t.ProjectID, BatchEngines: t.BatchEngines,
			Channels: t.Channels, Approvers: t.Approvers, DB: db,
		})
		dbs = append(dbs, db)
	}
	return targets, dbs, nil
}

// targetsSummary is doctor's line about the targets: their names and auth
// modes, never their secrets.
func targetsSummary(cfg Config) string {
	if cfg.TargetsFile == "" && len(cfg.Targets) == 1 {
		return "GeminiDB auth: " + string(cfg.Targets[0].Auth.Mode)
	}
	parts := make([]string, len(cfg.Targets))
	for i, t := range cfg.Targets {
		parts[i] = fmt.Sprintf("%s (%s)", t.Label(), t.Auth.Mode)
	}
	return fmt.Sprintf("%d GeminiDB targets from %s: %s", len(cfg.Targets), cfg.TargetsFile, strings.Join(parts, ", "))
}
