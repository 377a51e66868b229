package config

import (
	"fmt"
	"strings"
)

// VarError names the variable that is wrong and what is wrong with it.
// Its text is safe to print: it never contains a value of a secret.
type VarError struct {
	Variable string // one name, or several joined by ", " when they conflict
	Problem  string
}

// Error renders "VARIABLE: what is wrong".
func (e *VarError) Error() string { return e.Variable + ": " + e.Problem }

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

// Problems is every problem found in one configuration, in the order of the
// variables, then the targets file's. Each is a *VarError or a
// *TargetsFileError; errors.As finds them.
type Problems []error

// Error renders one problem per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems, for errors.As and errors.Is.
func (ps Problems) Unwrap() []error { return ps }
