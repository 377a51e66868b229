package config

import (
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// checkShape compares node with the Go type t of the file's format: every
// mapping key must be a field, mappings where structs are, lists where
// slices are, plain values where strings are. path is the field's path
// (e.g. auth.iam), who the target it belongs to once known. Every problem
// is recorded, without the offending value.
func (l *targetsLoader) checkShape(node *yaml.Node, t reflect.Type, path, who string) {
	for node.Kind == yaml.AliasNode {
		node = node.Alias
	}
	bad := func(n *yaml.Node, field, problem string) {
		l.problems = append(l.problems, &TargetsFileError{File: l.file, Target: who, Field: field, Line: n.Line, Problem: problem})
	}
	field := path
	if field == "" {
		field = "(top level)"
	}
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" && t.Kind() != reflect.Struct {
		return // an empty value: checked as missing later
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if node.Kind != yaml.MappingNode {
			bad(node, field, "must be a mapping of keys to values")
			return
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
					bad(k, name, "is an unknown key; the keys here are "+strings.Join(keys, ", "))
				} else {
					// Not repeated: a key of another shape may be a secret
					// pasted in the wrong place.
					bad(k, field, "has an unknown key; the keys here are "+strings.Join(keys, ", "))
				}
				continue
			}
			if seen[k.Value] {
				bad(k, name, "is given twice")
				continue
			}
			seen[k.Value] = true
			if path == "" && k.Value == "targets" {
				l.checkTargets(v)
				continue
			}
			l.checkShape(v, ft, name, who)
		}
	case reflect.Slice:
		if node.Kind != yaml.SequenceNode {
			bad(node, field, "must be a list, e.g. [a, b]")
			return
		}
		for _, item := range node.Content {
			l.checkShape(item, t.Elem(), path, who)
		}
	default: // string
		if node.Kind != yaml.ScalarNode {
			bad(node, field, "must be a single value, not a list or a mapping")
		}
	}
}

// checkTargets checks the shape of each entry of targets:, naming it.
func (l *targetsLoader) checkTargets(node *yaml.Node) {
	for node.Kind == yaml.AliasNode {
		node = node.Alias
	}
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		return // reported as "lists no target"
	}
	if node.Kind != yaml.SequenceNode {
		l.problems = append(l.problems, &TargetsFileError{File: l.file, Field: "targets", Line: node.Line, Problem: "must be a list of targets (- name: …)"})
		return
	}
	for i, item := range node.Content {
		who := fmt.Sprintf("#%d", i+1)
		if n := mapValue(item, "name"); n != nil && targetNameRe.MatchString(n.Value) {
			who = fmt.Sprintf("%q", n.Value)
		}
		l.checkShape(item, reflect.TypeFor[targetDoc](), "", who)
	}
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
