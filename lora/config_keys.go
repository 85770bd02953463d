package lora

import (
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// A run config's YAML tree is checked against RunConfig before it is
// decoded, so that errors speak the user's words rather than Go's: where the
// value came from (file:line, or the --set override), the dotted key, what
// was expected, and for a typo the nearest known key, e.g.
//
//	run.yaml:2: unknown key lora.rnak (did you mean lora.rank?)
//	run.yaml:5: training.batch_size: want an integer, got "two"

// origin says where the nodes of a config tree came from.
type origin struct {
	file string                // the config file; "" when there is none
	sets map[*yaml.Node]string // nodes made by an override, and that override
}

// at names where n came from: "--set k=v", "file:line", the file, or
// "config" when there is no file.
func (o origin) at(n *yaml.Node) string {
	if s, ok := o.sets[n]; ok {
		return "--set " + s
	}
	switch {
	case o.file == "":
		return "config"
	case n == nil || n.Line == 0:
		return o.file
	}
	return fmt.Sprintf("%s:%d", o.file, n.Line)
}

// keyChecker walks a config tree against the config's Go types and collects
// every problem in document order.
type keyChecker struct {
	origin
	dataSections []string // keys under data: that another reader owns
	errs         []string
	// merged are the mappings already merged (<<) into a section: a
	// mapping merged twice adds nothing, and checking it again would make
	// nested merges ([*a, *a] in a chain) take exponential time.
	merged map[mergedInto]bool
}

type mergedInto struct {
	mapping *yaml.Node
	prefix  string
}

func (c *keyChecker) add(n *yaml.Node, format string, args ...any) {
	c.errs = append(c.errs, c.at(n)+": "+fmt.Sprintf(format, args...))
}

var (
	runConfigType = reflect.TypeFor[RunConfig]()
	keyListType   = reflect.TypeFor[KeyList]()
)

// section checks mapping n against struct type t; its keys are named
// prefix+key.
func (c *keyChecker) section(n *yaml.Node, t reflect.Type, prefix string) {
	n = unalias(n)
	if isNull(n) {
		return // an empty section keeps the defaults
	}
	if n.Kind != yaml.MappingNode {
		what := "the config"
		if prefix != "" {
			what = strings.TrimSuffix(prefix, ".")
		}
		c.add(n, "%s: want a section of key: value lines, got %s", what, describe(n))
		return
	}
	fields, extras := yamlFields(t)
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			c.merge(v, t, prefix)
			continue
		}
		key := prefix + k.Value
		if first, dup := seen[k.Value]; dup {
			c.add(k, "%s is given twice (also at %s)", key, c.at(first))
			continue
		}
		seen[k.Value] = k
		f, ok := fields[k.Value]
		if !ok {
			if extras && slices.Contains(c.dataSections, k.Value) {
				continue // another reader's section, kept as written
			}
			known := fieldOrder(t)
			if extras {
				known = append(known, c.dataSections...)
			}
			c.add(k, "unknown key %s%s", key, suggest(prefix, k.Value, known))
			continue
		}
		c.value(v, f.Type, key)
	}
}

// merge checks the mappings a YAML merge key (<<) brings into a section.
func (c *keyChecker) merge(v *yaml.Node, t reflect.Type, prefix string) {
	v = unalias(v)
	targets := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		targets = v.Content
	}
	for _, m := range targets {
		m = unalias(m)
		if c.merged[mergedInto{m, prefix}] {
			continue
		}
		if c.merged == nil {
			c.merged = map[mergedInto]bool{}
		}
		c.merged[mergedInto{m, prefix}] = true
		c.section(m, t, prefix)
	}
}

// value checks the value n of key against the field type t.
func (c *keyChecker) value(n *yaml.Node, t reflect.Type, key string) {
	if t.Kind() == reflect.Struct {
		c.section(n, t, key+".")
		return
	}
	n = unalias(n)
	if isNull(n) {
		return // no value keeps the default
	}
	if t == keyListType {
		if n.Kind == yaml.ScalarNode {
			return
		}
		if n.Kind == yaml.SequenceNode {
			for _, item := range n.Content {
				if item = unalias(item); item.Kind != yaml.ScalarNode {
					c.add(item, "%s: want module paths (strings), got %s in the list", key, describe(item))
					return
				}
			}
			return
		}
		c.add(n, "%s: want a module path or a list of them, got %s", key, describe(n))
		return
	}
	if n.Kind != yaml.ScalarNode {
		c.add(n, "%s: want %s, got %s", key, wantOf(t), describe(n))
		return
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil || !wholeIfInteger(n, t) {
		c.add(n, "%s: want %s, got %s", key, wantOf(t), describe(n))
	}
}

// wholeIfInteger reports whether scalar n, bound for a field of type t, is
// a whole number when t is an integer type: yaml.v3 would truncate 2.5 to 2.
func wholeIfInteger(n *yaml.Node, t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
	default:
		return true
	}
	if n.ShortTag() != "!!float" {
		return true
	}
	var f float64
	return n.Decode(&f) == nil && f == math.Trunc(f)
}

// yamlFields maps the YAML keys of struct t (inline structs flattened) to
// their fields, and says whether t has an inline map for other keys.
func yamlFields(t reflect.Type) (fields map[string]reflect.StructField, extras bool) {
	fields = map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, inline, ok := yamlKey(f)
		switch {
		case !ok:
		case inline && f.Type.Kind() == reflect.Map:
			extras = true
		case inline:
			inner, more := yamlFields(f.Type)
			maps.Copy(fields, inner)
			extras = extras || more
		default:
			fields[name] = f
		}
	}
	return fields, extras
}

// yamlKey is the YAML key of struct field f as yaml.v3 reads it (its tag's
// name, else the lower-cased field name), whether f is inlined, and false
// for a field YAML skips.
func yamlKey(f reflect.StructField) (name string, inline, ok bool) {
	name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if !f.IsExported() || name == "-" {
		return "", false, false
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, slices.Contains(strings.Split(opts, ","), "inline"), true
}

// fieldOrder lists t's YAML keys in declaration order (inline structs in
// place).
func fieldOrder(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, inline, ok := yamlKey(f)
		switch {
		case !ok:
		case inline && f.Type.Kind() == reflect.Struct:
			names = append(names, fieldOrder(f.Type)...)
		case !inline:
			names = append(names, name)
		}
	}
	return names
}

// allKeys lists every dotted key of the run config, sections included.
func allKeys(t reflect.Type, prefix string) []string {
	fields, _ := yamlFields(t)
	var keys []string
	for _, name := range fieldOrder(t) {
		keys = append(keys, prefix+name)
		if ft := fields[name].Type; ft.Kind() == reflect.Struct {
			keys = append(keys, allKeys(ft, prefix+name+".")...)
		}
	}
	return keys
}

// otherNames are what mlx-lm's and PEFT's configs call some settings.
var otherNames = map[string]string{
	"learning_rate":               "optimizer.lr",
	"iters":                       "training.max_steps",
	"num_epochs":                  "training.epochs",
	"gradient_accumulation_steps": "training.grad_accumulation",
	"steps_per_report":            "training.report_every",
	"steps_per_eval":              "eval.every",
	"val_batches":                 "eval.max_batches",
	"adapter_path":                "output.dir",
	"lora_parameters":             "lora",
	"r":                           "lora.rank",
	"lora_alpha":                  "lora.alpha",
	"lora_dropout":                "lora.dropout",
	"target_modules":              "lora.keys",
	"max_grad_norm":               "optimizer.grad_clip",
	"lr_schedule":                 "schedule",
	"warmup":                      "schedule.warmup_steps",
}

// suggest proposes a key for the unknown key name under prefix: the
// nearest known key there by edit distance (a typo), else the same name in
// another section, else what mlx-lm or PEFT call it.
func suggest(prefix, name string, known []string) string {
	best, bestD := "", max(1, min(3, len(name)/4))+1
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), strings.ToLower(k)); d < bestD {
			best, bestD = prefix+k, d
		}
	}
	if best == "" {
		for _, k := range allKeys(runConfigType, "") {
			if strings.HasSuffix(k, "."+name) || k == name {
				best = k
				break
			}
		}
	}
	if best == "" {
		best = otherNames[name]
	}
	if best == "" || best == prefix+name {
		return ""
	}
	return " (did you mean " + best + "?)"
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of adjacent bytes.
func editDistance(a, b string) int {
	prev2, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// wantOf describes what a field of type t takes.
func wantOf(t reflect.Type) string {
	if w, ok := reflect.Zero(t).Interface().(interface{ yamlWant() string }); ok {
		return w.yamlWant()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

// describe shows a node as the user wrote it: a scalar quoted (cut short
// when long), or what kind of node it is.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a section (key: value lines)"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		v := n.Value
		if r := []rune(v); len(r) > 40 {
			v = string(r[:40]) + "…"
		}
		return fmt.Sprintf("%q", v)
	}
	return "an unexpected YAML node"
}

// unalias follows YAML aliases (*name) to the node they stand for.
func unalias(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// lookup finds the value node of a dotted key in a config tree, or nil.
func lookup(root *yaml.Node, key string) *yaml.Node {
	n := root
	for _, part := range strings.Split(key, ".") {
		n = unalias(n)
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}
