// Command render expands a Helm chart the way `helm template` does, for tests on machines
// without helm. It loads Chart.yaml and values.yaml, merges -f files and --set overrides,
// checks the result against values.schema.json, and executes every template under
// templates/ with Go's text/template, the sprig function library and helm's own functions
// (include, tpl, required, toYaml, fromYaml, toJson, fromJson, lookup). Files whose names
// start with "_" only define partials. The output is a YAML stream in which every document
// carries a "# Source: CHART/templates/FILE" line, as helm writes it.
//
// Values go through a YAML -> JSON -> Go round trip, as helm's sigs.k8s.io/yaml does, so
// numbers from files are float64 and keys are strings; --set values keep helm's int64/bool
// inference. That keeps template behaviour (printing, comparisons, toYaml key order) the same
// as helm's for the charts we render.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v2"
)

// multiFlag collects a repeated command-line option.
type multiFlag []string

type options struct {
	chartDir    string
	releaseName string
	namespace   string
	kubeVersion string
	apiVersions []string
	valueFiles  multiFlag
	sets        multiFlag
	setStrings  multiFlag
	isUpgrade   bool
	strict      bool
	notes       bool
	showValues  bool
}

const usage = `usage: render [options] CHART_DIR
  -f, --values FILE         merge a values file (repeatable, later wins)
  --set a.b=c[,x=y]         override values (helm's --set syntax and type inference)
  --set-string a.b=c        override values, always as strings
  --name NAME               release name (default "shoal")
  -n, --namespace NS        release namespace (default "default")
  --kube-version V          .Capabilities.KubeVersion (default v1.29.0)
  -a, --api-versions G/V    extra .Capabilities.APIVersions entry (repeatable)
  --is-upgrade              .Release.IsUpgrade true instead of IsInstall
  --strict                  a missing map key in a template is an error
  --notes                   print the rendered NOTES.txt instead of the manifests
  --show-values             print the merged values as JSON and exit
`

func parseArgs(args []string) (*options, error) {
	o := &options{releaseName: "shoal", namespace: "default", kubeVersion: "v1.29.0"}
	next := func(i *int, name string) (string, error) {
		if *i+1 >= len(args) {
			return "", fmt.Errorf("%s needs a value", name)
		}
		*i++
		return args[*i], nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		var err error
		var v string
		if k, val, ok := strings.Cut(a, "="); ok && strings.HasPrefix(a, "--") {
			// --opt=value form: treat as two arguments.
			args = append(args[:i], append([]string{k, val}, args[i+1:]...)...)
			a = k
		}
		switch a {
		case "-f", "--values":
			if v, err = next(&i, a); err == nil {
				o.valueFiles = append(o.valueFiles, v)
			}
		case "--set":
			if v, err = next(&i, a); err == nil {
				o.sets = append(o.sets, v)
			}
		case "--set-string":
			if v, err = next(&i, a); err == nil {
				o.setStrings = append(o.setStrings, v)
			}
		case "--name":
			o.releaseName, err = next(&i, a)
		case "-n", "--namespace":
			o.namespace, err = next(&i, a)
		case "--kube-version":
			o.kubeVersion, err = next(&i, a)
		case "-a", "--api-versions":
			if v, err = next(&i, a); err == nil {
				o.apiVersions = append(o.apiVersions, v)
			}
		case "--is-upgrade":
			o.isUpgrade = true
		case "--strict":
			o.strict = true
		case "--notes":
			o.notes = true
		case "--show-values":
			o.showValues = true
		case "-h", "--help":
			return nil, errors.New(strings.TrimSpace(usage))
		default:
			if strings.HasPrefix(a, "-") {
				return nil, fmt.Errorf("unknown option %s", a)
			}
			if o.chartDir != "" {
				return nil, fmt.Errorf("one chart only (got %s and %s)", o.chartDir, a)
			}
			o.chartDir = a
		}
		if err != nil {
			return nil, err
		}
	}
	if o.chartDir == "" {
		return nil, errors.New(strings.TrimSpace(usage))
	}
	return o, nil
}

// ---- values ------------------------------------------------------------------------------

// normalize turns what yaml.v2 produces (map[interface{}]interface{}) into JSON-shaped data
// by a JSON round trip, which is what helm's YAML loader does.
func normalize(v interface{}) (interface{}, error) {
	v, err := stringKeys(v)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out interface{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func stringKeys(v interface{}) (interface{}, error) {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, val := range t {
			ks, ok := k.(string)
			if !ok {
				ks = fmt.Sprint(k)
			}
			nv, err := stringKeys(val)
			if err != nil {
				return nil, err
			}
			m[ks] = nv
		}
		return m, nil
	case map[string]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, val := range t {
			nv, err := stringKeys(val)
			if err != nil {
				return nil, err
			}
			m[k] = nv
		}
		return m, nil
	case []interface{}:
		l := make([]interface{}, len(t))
		for i, val := range t {
			nv, err := stringKeys(val)
			if err != nil {
				return nil, err
			}
			l[i] = nv
		}
		return l, nil
	default:
		return v, nil
	}
}

func readYAMLMap(path string) (map[string]interface{}, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw interface{}
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if raw == nil {
		return map[string]interface{}{}, nil
	}
	n, err := normalize(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	m, ok := n.(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: top level is not a map", path)
	}
	return m, nil
}

// mergeValues merges src into dst as helm does for -f files: maps merge key by key, anything
// else replaces, and a null deletes the key.
func mergeValues(dst, src map[string]interface{}) {
	for k, sv := range src {
		if sv == nil {
			delete(dst, k)
			continue
		}
		sm, sIsMap := sv.(map[string]interface{})
		dm, dIsMap := dst[k].(map[string]interface{})
		if sIsMap && dIsMap {
			mergeValues(dm, sm)
			continue
		}
		dst[k] = sv
	}
}

// splitUnescaped splits s on sep, honouring backslash escapes of sep and backslash, and
// not splitting inside {...} lists.
func splitUnescaped(s string, sep byte) []string {
	var parts []string
	var cur strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			cur.WriteByte(c)
			cur.WriteByte(s[i+1])
			i++
		case c == '{':
			depth++
			cur.WriteByte(c)
		case c == '}' && depth > 0:
			depth--
			cur.WriteByte(c)
		case c == sep && depth == 0:
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, cur.String())
}

func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// typedValue is helm's strvals inference: bools, null, int64, else the string.
func typedValue(s string, asString bool) interface{} {
	if asString {
		return s
	}
	switch s {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if len(s) > 1 && s[0] == '0' {
		return s // helm keeps leading-zero numbers as strings
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	return s
}

var indexRe = regexp.MustCompile(`^(.*)\[(\d+)\]$`)

// applySet applies one --set argument ("a.b=1,c[0]=x,d={x,y}") to vals.
func applySet(vals map[string]interface{}, arg string, asString bool) error {
	for _, assign := range splitUnescaped(arg, ',') {
		if assign == "" {
			continue
		}
		eq := -1
		for i := 0; i < len(assign); i++ {
			if assign[i] == '\\' {
				i++
				continue
			}
			if assign[i] == '=' {
				eq = i
				break
			}
		}
		if eq < 0 {
			return fmt.Errorf("--set %q: key %q has no value", arg, assign)
		}
		key, raw := assign[:eq], assign[eq+1:]
		var val interface{}
		if strings.HasPrefix(raw, "{") && strings.HasSuffix(raw, "}") && !asString {
			items := []interface{}{}
			inner := raw[1 : len(raw)-1]
			if inner != "" {
				for _, it := range splitUnescaped(inner, ',') {
					items = append(items, typedValue(unescape(it), false))
				}
			}
			val = items
		} else {
			val = typedValue(unescape(raw), asString)
		}
		if err := setPath(vals, splitUnescaped(key, '.'), val); err != nil {
			return fmt.Errorf("--set %q: %v", arg, err)
		}
	}
	return nil
}

func setPath(m map[string]interface{}, path []string, val interface{}) error {
	seg := unescape(path[0])
	last := len(path) == 1
	if mm := indexRe.FindStringSubmatch(seg); mm != nil {
		name := mm[1]
		idx, _ := strconv.Atoi(mm[2])
		if idx > 10000 {
			return fmt.Errorf("index %d too large", idx)
		}
		list, _ := m[name].([]interface{})
		for len(list) <= idx {
			list = append(list, nil)
		}
		if last {
			list[idx] = val
		} else {
			child, ok := list[idx].(map[string]interface{})
			if !ok {
				child = map[string]interface{}{}
			}
			if err := setPath(child, path[1:], val); err != nil {
				return err
			}
			list[idx] = child
		}
		m[name] = list
		return nil
	}
	if last {
		if val == nil {
			delete(m, seg)
		} else {
			m[seg] = val
		}
		return nil
	}
	child, ok := m[seg].(map[string]interface{})
	if !ok {
		child = map[string]interface{}{}
		m[seg] = child
	}
	return setPath(child, path[1:], val)
}

// ---- values.schema.json -------------------------------------------------------------------

// schemaCheck validates v against the subset of JSON Schema the chart uses: type, enum,
// const, properties, additionalProperties, required, items, minimum, maximum, minLength,
// maxLength, pattern, minItems, propertyNames, anyOf, oneOf, allOf, not, if/then/else and
// local $ref.
type schemaCheck struct {
	root map[string]interface{}
	errs []string
}

func jsonType(v interface{}) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case map[string]interface{}:
		return "object"
	case []interface{}:
		return "array"
	case float64:
		if t == float64(int64(t)) {
			return "integer"
		}
		return "number"
	case int, int64, int32:
		return "integer"
	}
	return fmt.Sprintf("%T", v)
}

func asFloat(v interface{}) (float64, bool) {
	switch t := v.(type) {
	case float64:
		return t, true
	case int64:
		return float64(t), true
	case int:
		return float64(t), true
	}
	return 0, false
}

func typeMatches(want string, v interface{}) bool {
	got := jsonType(v)
	return got == want || (want == "number" && got == "integer")
}

func (s *schemaCheck) resolve(node map[string]interface{}) map[string]interface{} {
	for i := 0; i < 16; i++ {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node
		}
		if !strings.HasPrefix(ref, "#/") {
			s.errs = append(s.errs, fmt.Sprintf("schema: unsupported $ref %q", ref))
			return map[string]interface{}{}
		}
		var cur interface{} = s.root
		for _, p := range strings.Split(ref[2:], "/") {
			cm, _ := cur.(map[string]interface{})
			cur = cm[p]
		}
		next, ok := cur.(map[string]interface{})
		if !ok {
			s.errs = append(s.errs, fmt.Sprintf("schema: $ref %q not found", ref))
			return map[string]interface{}{}
		}
		node = next
	}
	return node
}

func equalJSON(a, b interface{}) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// valid reports whether v matches node without recording errors.
func (s *schemaCheck) valid(node interface{}, v interface{}) bool {
	sub := &schemaCheck{root: s.root}
	sub.check(node, v, "")
	return len(sub.errs) == 0
}

func (s *schemaCheck) fail(path, format string, args ...interface{}) {
	if path == "" {
		path = "(root)"
	}
	s.errs = append(s.errs, path+": "+fmt.Sprintf(format, args...))
}

func (s *schemaCheck) check(nodeAny interface{}, v interface{}, path string) {
	if b, ok := nodeAny.(bool); ok {
		if !b {
			s.fail(path, "not allowed")
		}
		return
	}
	node, ok := nodeAny.(map[string]interface{})
	if !ok {
		return
	}
	node = s.resolve(node)
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	if t, ok := node["type"]; ok {
		var types []string
		switch tt := t.(type) {
		case string:
			types = []string{tt}
		case []interface{}:
			for _, x := range tt {
				types = append(types, fmt.Sprint(x))
			}
		}
		matched := false
		for _, want := range types {
			if typeMatches(want, v) {
				matched = true
			}
		}
		if !matched {
			s.fail(path, "invalid type: expected %s, given %s", strings.Join(types, " or "), jsonType(v))
			return
		}
	}
	if e, ok := node["enum"].([]interface{}); ok {
		found := false
		for _, x := range e {
			if equalJSON(x, v) {
				found = true
			}
		}
		if !found {
			b, _ := json.Marshal(e)
			s.fail(path, "value %v must be one of %s", v, b)
		}
	}
	if c, ok := node["const"]; ok && !equalJSON(c, v) {
		s.fail(path, "value must be %v", c)
	}
	if f, ok := asFloat(v); ok {
		if mn, ok := node["minimum"].(float64); ok && f < mn {
			s.fail(path, "must be >= %v", mn)
		}
		if mx, ok := node["maximum"].(float64); ok && f > mx {
			s.fail(path, "must be <= %v", mx)
		}
	}
	if str, ok := v.(string); ok {
		if mn, ok := node["minLength"].(float64); ok && float64(len([]rune(str))) < mn {
			s.fail(path, "string shorter than %v", mn)
		}
		if mx, ok := node["maxLength"].(float64); ok && float64(len([]rune(str))) > mx {
			s.fail(path, "string longer than %v", mx)
		}
		if p, ok := node["pattern"].(string); ok {
			re, err := regexp.Compile(p)
			if err != nil {
				s.fail(path, "schema pattern %q: %v", p, err)
			} else if !re.MatchString(str) {
				s.fail(path, "%q does not match pattern %q", str, p)
			}
		}
	}
	if obj, ok := v.(map[string]interface{}); ok {
		props, _ := node["properties"].(map[string]interface{})
		if req, ok := node["required"].([]interface{}); ok {
			for _, r := range req {
				if _, has := obj[fmt.Sprint(r)]; !has {
					s.fail(path, "missing required property %q", r)
				}
			}
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if pn, ok := node["propertyNames"]; ok {
			for _, k := range keys {
				s.check(pn, k, join(k))
			}
		}
		for _, k := range keys {
			if ps, has := props[k]; has {
				s.check(ps, obj[k], join(k))
				continue
			}
			if ap, has := node["additionalProperties"]; has {
				if b, isBool := ap.(bool); isBool && !b {
					s.fail(path, "additional property %q is not allowed", k)
				} else if !isBool {
					s.check(ap, obj[k], join(k))
				}
			}
		}
	}
	if arr, ok := v.([]interface{}); ok {
		if mn, ok := node["minItems"].(float64); ok && float64(len(arr)) < mn {
			s.fail(path, "needs at least %v items", mn)
		}
		if items, ok := node["items"]; ok {
			for i, x := range arr {
				s.check(items, x, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	if all, ok := node["allOf"].([]interface{}); ok {
		for _, sub := range all {
			s.check(sub, v, path)
		}
	}
	if anyOf, ok := node["anyOf"].([]interface{}); ok {
		n := 0
		for _, sub := range anyOf {
			if s.valid(sub, v) {
				n++
			}
		}
		if n == 0 {
			s.fail(path, "matches none of anyOf")
		}
	}
	if oneOf, ok := node["oneOf"].([]interface{}); ok {
		n := 0
		for _, sub := range oneOf {
			if s.valid(sub, v) {
				n++
			}
		}
		if n != 1 {
			s.fail(path, "must match exactly one of oneOf (matches %d)", n)
		}
	}
	if not, ok := node["not"]; ok && s.valid(not, v) {
		s.fail(path, "must not match the 'not' schema")
	}
	if cond, ok := node["if"]; ok {
		if s.valid(cond, v) {
			if th, ok := node["then"]; ok {
				s.check(th, v, path)
			}
		} else if el, ok := node["else"]; ok {
			s.check(el, v, path)
		}
	}
}

func validateSchema(chartDir string, vals map[string]interface{}) error {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var root map[string]interface{}
	if err := json.Unmarshal(b, &root); err != nil {
		return fmt.Errorf("values.schema.json: %v", err)
	}
	// Validate the JSON shape of the values (int64 from --set becomes a number).
	nv, err := normalize(vals)
	if err != nil {
		return err
	}
	s := &schemaCheck{root: root}
	s.check(root, nv, "")
	if len(s.errs) > 0 {
		return fmt.Errorf("values don't meet the specifications of the schema:\n- %s",
			strings.Join(s.errs, "\n- "))
	}
	return nil
}

// ---- template objects --------------------------------------------------------------------

// APIVersions is .Capabilities.APIVersions; templates call .Has.
type APIVersions []string

// Has reports whether a group/version (or group/version/Kind) is available.
func (a APIVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

// KubeVersion is .Capabilities.KubeVersion.
type KubeVersion struct {
	Version    string
	Major      string
	Minor      string
	GitVersion string
}

func (k KubeVersion) String() string { return k.Version }

// Capabilities is .Capabilities.
type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions APIVersions
	HelmVersion map[string]string
}

// Files is .Files: read access to files of the chart outside templates/.
type Files struct{ dir string }

// Get returns a chart file's content, or "" when it cannot be read.
func (f Files) Get(name string) string {
	b, err := os.ReadFile(filepath.Join(f.dir, filepath.Clean("/"+name)))
	if err != nil {
		return ""
	}
	return string(b)
}

var defaultAPIVersions = []string{
	"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v1", "autoscaling/v2",
	"networking.k8s.io/v1", "rbac.authorization.k8s.io/v1", "storage.k8s.io/v1",
	"apiextensions.k8s.io/v1", "coordination.k8s.io/v1", "discovery.k8s.io/v1",
}

func capabilities(o *options) (Capabilities, error) {
	v := o.kubeVersion
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return Capabilities{}, fmt.Errorf("--kube-version %q: expected MAJOR.MINOR[.PATCH]",
			o.kubeVersion)
	}
	apis := append(APIVersions{}, defaultAPIVersions...)
	for _, a := range o.apiVersions {
		apis = append(apis, a)
	}
	return Capabilities{
		KubeVersion: KubeVersion{Version: v, Major: parts[0], Minor: parts[1], GitVersion: v},
		APIVersions: apis,
		HelmVersion: map[string]string{"Version": "v3.14.0"},
	}, nil
}

// chartObject turns Chart.yaml's keys into helm's .Chart field names (name -> Name).
func chartObject(meta map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range meta {
		if k == "" {
			continue
		}
		out[strings.ToUpper(k[:1])+k[1:]] = v
	}
	for _, k := range []string{"Name", "Version", "AppVersion", "Description", "Type", "KubeVersion"} {
		if _, ok := out[k]; !ok {
			out[k] = ""
		}
	}
	return out
}

// ---- functions ---------------------------------------------------------------------------

func toYAML(v interface{}) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	var generic interface{}
	if err := json.Unmarshal(b, &generic); err != nil {
		return ""
	}
	out, err := yaml.Marshal(jsonToOrdered(generic))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(out), "\n")
}

// jsonToOrdered keeps JSON's (sorted) key order and its number forms for yaml.v2, as
// sigs.k8s.io/yaml's JSONToYAML does.
func jsonToOrdered(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		ms := yaml.MapSlice{}
		for _, k := range keys {
			ms = append(ms, yaml.MapItem{Key: k, Value: jsonToOrdered(t[k])})
		}
		return ms
	case []interface{}:
		l := make([]interface{}, len(t))
		for i, x := range t {
			l[i] = jsonToOrdered(x)
		}
		return l
	case float64:
		if t == float64(int64(t)) && t < 1e15 && t > -1e15 {
			return int64(t)
		}
		return t
	}
	return v
}

func fromYAML(s string) map[string]interface{} {
	var raw interface{}
	if err := yaml.Unmarshal([]byte(s), &raw); err != nil {
		return map[string]interface{}{"Error": err.Error()}
	}
	n, err := normalize(raw)
	if err != nil {
		return map[string]interface{}{"Error": err.Error()}
	}
	m, ok := n.(map[string]interface{})
	if !ok {
		return map[string]interface{}{}
	}
	return m
}

func fromYAMLArray(s string) []interface{} {
	var raw interface{}
	if err := yaml.Unmarshal([]byte(s), &raw); err != nil {
		return []interface{}{err.Error()}
	}
	n, err := normalize(raw)
	if err != nil {
		return []interface{}{err.Error()}
	}
	l, _ := n.([]interface{})
	return l
}

func toJSON(v interface{}) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

type renderer struct {
	tpl       *template.Template
	strict    bool
	includeNS int
}

func (r *renderer) funcs() template.FuncMap {
	f := sprig.TxtFuncMap()
	// helm removes these: a chart must not read the renderer's environment.
	delete(f, "env")
	delete(f, "expandenv")
	f["toYaml"] = toYAML
	f["fromYaml"] = fromYAML
	f["fromYamlArray"] = fromYAMLArray
	f["toJson"] = toJSON
	f["fromJson"] = fromJSON
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return nil, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	f["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	f["include"] = func(name string, data interface{}) (string, error) {
		r.includeNS++
		defer func() { r.includeNS-- }()
		if r.includeNS > 100 {
			return "", fmt.Errorf("include %q: nested too deeply", name)
		}
		var buf bytes.Buffer
		if err := r.tpl.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := r.tpl.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", fmt.Errorf("tpl: %v", err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("tpl: %v", err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	return f
}

// ---- rendering ---------------------------------------------------------------------------

func templateFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		switch filepath.Ext(p) {
		case ".yaml", ".yml", ".tpl", ".txt", ".json":
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	return files, err
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

func run(o *options, stdout io.Writer) error {
	meta, err := readYAMLMap(filepath.Join(o.chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	chartName, _ := meta["name"].(string)
	if chartName == "" {
		return errors.New("Chart.yaml: name is missing")
	}
	if api, _ := meta["apiVersion"].(string); api != "v2" {
		return fmt.Errorf("Chart.yaml: apiVersion %q, expected v2", api)
	}
	vals, err := readYAMLMap(filepath.Join(o.chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range o.valueFiles {
		extra, err := readYAMLMap(f)
		if err != nil {
			return err
		}
		mergeValues(vals, extra)
	}
	for _, s := range o.sets {
		if err := applySet(vals, s, false); err != nil {
			return err
		}
	}
	for _, s := range o.setStrings {
		if err := applySet(vals, s, true); err != nil {
			return err
		}
	}
	if err := validateSchema(o.chartDir, vals); err != nil {
		return err
	}
	if o.showValues {
		b, err := json.MarshalIndent(vals, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, string(b))
		return err
	}
	caps, err := capabilities(o)
	if err != nil {
		return err
	}

	r := &renderer{strict: o.strict}
	root := template.New("gotpl")
	if o.strict {
		root.Option("missingkey=error")
	} else {
		root.Option("missingkey=zero")
	}
	r.tpl = root.Funcs(r.funcs())

	tdir := filepath.Join(o.chartDir, "templates")
	files, err := templateFiles(tdir)
	if err != nil {
		return err
	}
	var names []string
	for _, p := range files {
		rel, _ := filepath.Rel(o.chartDir, p)
		name := chartName + "/" + filepath.ToSlash(rel)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if _, err := r.tpl.New(name).Parse(string(b)); err != nil {
			return err
		}
		names = append(names, name)
	}

	release := map[string]interface{}{
		"Name": o.releaseName, "Namespace": o.namespace, "Service": "Helm",
		"IsInstall": !o.isUpgrade, "IsUpgrade": o.isUpgrade, "Revision": 1,
	}
	var out bytes.Buffer
	for _, name := range names {
		base := filepath.Base(name)
		isNotes := base == "NOTES.txt"
		if strings.HasPrefix(base, "_") || isNotes != o.notes {
			continue
		}
		if !isNotes && !strings.HasSuffix(base, ".yaml") && !strings.HasSuffix(base, ".yml") {
			continue
		}
		data := map[string]interface{}{
			"Values":       vals,
			"Release":      release,
			"Chart":        chartObject(meta),
			"Capabilities": caps,
			"Files":        Files{dir: o.chartDir},
			"Template": map[string]interface{}{
				"Name":     name,
				"BasePath": chartName + "/templates",
			},
		}
		var buf bytes.Buffer
		if err := r.tpl.ExecuteTemplate(&buf, name, data); err != nil {
			return err
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if isNotes {
			out.WriteString(text)
			continue
		}
		for _, doc := range docSep.Split(text, -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", name, strings.Trim(doc, "\n"))
		}
	}
	_, err = stdout.Write(out.Bytes())
	return err
}

func main() {
	o, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
