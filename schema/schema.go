// Package schema holds the JSON Schemas (draft 2020-12) of every document pkcstok-migrate
// reads or prints, and validates documents against them.
//
// The schemas describe exactly the Go types contract.Request ("request"), contract.Plan or contract.Multi
// ("plan"), contract.Result ("result"), the error document ("error") and contract.Inventory ("info").
package schema

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"

	gojson "github.com/goccy/go-json"
	"github.com/santhosh-tekuri/jsonschema/v5"
)

//go:embed *.json
var files embed.FS

// Kind names one schema.
type Kind string

// The schemas.
const (
	Request Kind = "request"
	Plan    Kind = "plan"
	Result  Kind = "result"
	Error   Kind = "error"
	Info    Kind = "info"
)

var kinds = []Kind{Request, Plan, Result, Error, Info}

// Kinds lists every schema, in the order the `schema` command shows them.
func Kinds() []Kind { return append([]Kind(nil), kinds...) }

// URL is the $id of the schema of kind k.
func URL(k Kind) string {
	return "https://ocktools.invalid/pkcstok-migrate/" + string(k) + ".schema.json"
}

func known(k Kind) bool {
	for _, x := range kinds {
		if x == k {
			return true
		}
	}
	return false
}

// ErrUnknownKind is returned (wrapped) for a Kind that is not one of Kinds().
var ErrUnknownKind = errors.New("unknown schema kind")

// Source returns the schema document of kind k, as published by `pkcstok-migrate schema`.
// The caller may modify the returned slice.
func Source(k Kind) ([]byte, error) {
	if !known(k) {
		return nil, fmt.Errorf("schema: %w %q", ErrUnknownKind, string(k))
	}
	return files.ReadFile(string(k) + ".json")
}

// ValidationError says why a document does not match its schema.
type ValidationError struct {
	Kind Kind
	// Field is the JSON pointer of the offending value ("/slot", "/objects/2/class"), or of the
	// offending member for an unknown key ("/bogus"), a missing member ("/token") or two members
	// that exclude each other (the first of them, "/so_pin"). "" means the document as a whole.
	Field   string
	Message string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("invalid %s document: %s", e.Kind, e.Message)
	}
	return fmt.Sprintf("invalid %s document: %s: %s", e.Kind, e.Field, e.Message)
}

type compiled struct {
	schema *jsonschema.Schema
	raw    any // the schema document, for resolving keyword locations
}

// compiledKinds holds each schema once it is compiled: each on its first use and on its own,
// so a command that validates one kind of document (apply reads a request) does not compile
// the others (about 10 ms of a run's start, before any work).
var compiledKinds = func() map[Kind]func() (*compiled, error) {
	m := make(map[Kind]func() (*compiled, error), len(kinds))
	for _, k := range kinds {
		m[k] = sync.OnceValues(func() (*compiled, error) { return compile(k) })
	}
	return m
}()

// compile compiles the schema of kind k as draft 2020-12; the compiler checks it against the
// 2020-12 metaschema. Each schema is self-contained (no $ref leaves its document), so it
// compiles alone.
func compile(k Kind) (*compiled, error) {
	b, err := files.ReadFile(string(k) + ".json")
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft2020
	if err := c.AddResource(URL(k), bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("schema %s: %w", k, err)
	}
	s, err := c.Compile(URL(k))
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", k, err)
	}
	raw, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", k, err)
	}
	return &compiled{schema: s, raw: raw}, nil
}

func get(k Kind) (*compiled, error) {
	c, ok := compiledKinds[k]
	if !ok {
		return nil, fmt.Errorf("schema: %w %q", ErrUnknownKind, string(k))
	}
	return c()
}

// decode parses exactly one JSON value, keeping numbers exact.
func decode(doc []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

// Validate checks doc against the schema of kind k. A document that is not JSON or does not
// match gives a *ValidationError; an unknown kind gives an error wrapping ErrUnknownKind.
func Validate(k Kind, doc []byte) error {
	c, err := get(k)
	if err != nil {
		return err
	}
	v, err := decode(doc)
	if err != nil {
		return &ValidationError{Kind: k, Message: "not a JSON document: " + err.Error()}
	}
	return c.validate(k, v)
}

// ValidateValue marshals v (with goccy/go-json, like the command's output) and validates it.
func ValidateValue(k Kind, v any) error {
	b, err := gojson.Marshal(v)
	if err != nil {
		return fmt.Errorf("schema: marshal %s document: %w", k, err)
	}
	return Validate(k, b)
}

func (c *compiled) validate(k Kind, v any) error {
	err := c.schema.Validate(v)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &ValidationError{Kind: k, Message: err.Error()}
	}
	field, msg := c.mostSpecific(ve, v)
	return &ValidationError{Kind: k, Field: field, Message: msg}
}

// mostSpecific explains every leaf of the error tree and picks the first one whose field is
// the deepest.
func (c *compiled) mostSpecific(ve *jsonschema.ValidationError, doc any) (field, msg string) {
	field, msg = ve.InstanceLocation, ve.Message
	bestDepth := -1
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			f, m := c.explain(e, doc)
			if d := depth(f); d > bestDepth {
				field, msg, bestDepth = f, m, d
			}
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return field, msg
}

func depth(ptr string) int {
	if ptr == "" {
		return 0
	}
	return strings.Count(ptr, "/")
}

// explain turns a leaf error into (field, message). For keywords that fail at an object but are
// about one of its members (additionalProperties, required, not+required) the member is named.
func (c *compiled) explain(e *jsonschema.ValidationError, doc any) (string, string) {
	loc := e.InstanceLocation
	kw := e.AbsoluteKeywordLocation
	if i := strings.IndexByte(kw, '#'); i >= 0 {
		kw = kw[i+1:]
	}
	last := kw
	if i := strings.LastIndexByte(kw, '/'); i >= 0 {
		last = kw[i+1:]
	}
	inst, _ := resolve(doc, loc).(map[string]any)
	switch last {
	case "additionalProperties":
		parent, _ := resolve(c.raw, strings.TrimSuffix(kw, "/additionalProperties")).(map[string]any)
		props, _ := parent["properties"].(map[string]any)
		var unknown []string
		for name := range inst {
			if _, ok := props[name]; !ok {
				unknown = append(unknown, name)
			}
		}
		sort.Strings(unknown)
		if len(unknown) > 0 {
			return loc + "/" + escape(unknown[0]), "unknown member " + quoteAll(unknown) + " not allowed"
		}
	case "required":
		req := strList(resolve(c.raw, kw))
		var missing []string
		for _, name := range req {
			if _, ok := inst[name]; !ok {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return loc + "/" + escape(missing[0]), "missing required member " + quoteAll(missing)
		}
	case "not":
		sub, _ := resolve(c.raw, kw).(map[string]any)
		if req := strList(sub["required"]); len(sub) == 1 && len(req) == 1 {
			return loc + "/" + escape(req[0]), "member " + strconv.Quote(req[0]) + " not allowed here"
		} else if len(sub) == 1 && len(req) > 1 {
			return loc + "/" + escape(req[0]), quoteAll(req) + " are mutually exclusive"
		}
	}
	return loc, e.Message
}

// resolve follows a JSON pointer (RFC 6901) into a decoded JSON value; nil when it does not exist.
func resolve(v any, ptr string) any {
	if ptr == "" {
		return v
	}
	if ptr[0] != '/' {
		return nil
	}
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch x := v.(type) {
		case map[string]any:
			v = x[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func escape(tok string) string {
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}

func strList(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, x := range a {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}
