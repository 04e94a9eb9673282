package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	json "github.com/goccy/go-json"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/schema"
)

// progressThreshold is the object count from which a progress bar is shown on a terminal.
const progressThreshold = 500

// output prints JSON (or a text summary) on stdout and a human summary on stderr when stderr
// is a terminal.
type output struct {
	e        *env
	json     bool
	warnings []string

	mu  sync.Mutex
	bar *progressbar.ProgressBar

	ttyOnce sync.Once
	tty     bool
}

// stderrTTY reports whether stderr is a terminal, asked once (progress asks for every object).
func (o *output) stderrTTY() bool {
	o.ttyOnce.Do(func() {
		f, ok := o.e.stderr.(*os.File)
		o.tty = ok && term.IsTerminal(int(f.Fd()))
	})
	return o.tty
}

func (o *output) warn(msg string) {
	o.warnings = append(o.warnings, msg)
	tprintf(o.e.stderr, "pkcstok-migrate: warning: %s\n", msg)
}

func (o *output) writeJSON(v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		b = []byte(`{"error":{"code":"internal","message":"cannot encode the output"}}`)
	}
	o.e.stdout.Write(append(b, '\n'))
}

// errorDoc is the error document of schema "error".
type errorDoc struct {
	Error errorBody `json:"error"`
}

type errorBody struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Field   string         `json:"field,omitempty"`
	Details map[string]any `json:"details,omitempty"`
}

func (o *output) fail(err error) int {
	var pe *contract.Error
	body := errorBody{Code: string(contract.CodeInternal), Message: err.Error()}
	if errors.As(err, &pe) {
		body = errorBody{Code: string(contract.CodeOf(err)), Message: pe.Message, Field: pe.Field, Details: pe.Details}
	}
	if o.json {
		o.writeJSON(errorDoc{Error: body})
	} else {
		tprintf(o.e.stdout, "error (%s): %s\n", body.Code, body.Message)
	}
	if o.json && o.stderrTTY() {
		tprintf(o.e.stderr, "pkcstok-migrate: %s\n", body.Message)
	}
	return 1
}

// emit prints v as JSON with the summary on a terminal's stderr, or with --json=false the
// summary (and text) on stdout.
func (o *output) emit(v any, summary, text string) {
	if o.json {
		o.writeJSON(v)
		if o.stderrTTY() {
			fmt.Fprint(o.e.stderr, summary)
		}
		return
	}
	fmt.Fprint(o.e.stdout, summary, text)
}

func (o *output) plan(p *contract.Plan) {
	p.Warnings = append(p.Warnings, o.warnings...)
	text := ""
	if p.ConfDiff != "" {
		text = "\n" + safeText(p.ConfDiff)
	}
	o.emit(p, planSummary(p), text)
}

func (o *output) multi(m *contract.Multi) {
	if o.json {
		o.writeJSON(m)
		return
	}
	for i := range m.Plans {
		fmt.Fprint(o.e.stdout, planSummary(&m.Plans[i]))
	}
	for _, s := range m.Skipped {
		tprintf(o.e.stdout, "slot %d (%s): skipped: %s\n", s.Slot, s.Stdll, s.Reason)
	}
}

func (o *output) result(r *contract.Result) {
	r.Warnings = append(r.Warnings, o.warnings...)
	o.emit(r, resultSummary(r), "")
}

func planSummary(p *contract.Plan) string {
	var b strings.Builder
	tprintf(&b, "slot %d: %s token, repository %s (%s format), conf tokversion %s\n", p.Slot, p.TokenType, p.Datastore, p.Format, p.ConfFormat)
	tprintf(&b, "  objects: %d (%d private, %d public): %d to re-encrypt, %d headers to rewrite, %d already 3.12\n",
		p.Counts.Total, p.Counts.Private, p.Counts.Public, p.Counts.Reencrypt, p.Counts.RewrapHeader, p.Counts.None)
	if p.Changed {
		b.WriteString("  changes: ")
		var parts []string
		if p.Format != contract.Format312 {
			parts = append(parts, "migrate the repository")
		}
		if p.ConfDiff != "" {
			parts = append(parts, "set tokversion = 3.12 in "+p.Conf)
		}
		tprintf(&b, "%s\n", strings.Join(parts, ", "))
	} else {
		b.WriteString("  nothing to do\n")
	}
	for _, w := range p.Warnings {
		tprintf(&b, "  warning: %s\n", w)
	}
	for _, w := range p.Incomplete {
		tprintf(&b, "  not seen: %s\n", w)
	}
	return b.String()
}

func resultSummary(r *contract.Result) string {
	var b strings.Builder
	if !r.Changed {
		tprintf(&b, "%s: nothing to do for %s\n", r.Operation, r.Datastore)
	} else {
		tprintf(&b, "%s: %s done", r.Operation, r.Datastore)
		if r.Operation == "apply" {
			tprintf(&b, " (%d of %d objects migrated, verified %v)", r.ObjectsMigrated, r.ObjectsTotal, r.Verified)
		}
		b.WriteString("\n")
	}
	if r.Backup != nil {
		if r.Backup.Datastore != "" {
			tprintf(&b, "  backup: %s\n", r.Backup.Datastore)
		}
		if r.Backup.Conf != "" {
			tprintf(&b, "  backup: %s\n", r.Backup.Conf)
		}
	}
	for _, p := range r.Removed {
		tprintf(&b, "  removed: %s\n", p)
	}
	for _, w := range r.Warnings {
		tprintf(&b, "  warning: %s\n", w)
	}
	return b.String()
}

// progress drives a progress bar on a terminal for large tokens.
func (o *output) progress(done, total int) {
	if total < progressThreshold || !o.stderrTTY() {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bar == nil {
		o.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(o.e.stderr),
			progressbar.OptionSetDescription("re-encrypting objects"),
			progressbar.OptionShowCount(),
			progressbar.OptionThrottle(100_000_000),
			progressbar.OptionClearOnFinish())
	}
	_ = o.bar.Set(done)
}

func (o *output) finishProgress() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bar != nil {
		_ = o.bar.Finish()
	}
}

func runSchema(e *env, args []string) int {
	if len(args) > 1 {
		tprintf(e.stderr, "pkcstok-migrate: usage: schema [%s]\n", strings.Join(commandByName("schema").choices, "|"))
		return 1
	}
	if len(args) == 0 {
		docs := map[string]json.RawMessage{}
		for _, k := range schema.Kinds() {
			src, err := schema.Source(k)
			if err != nil {
				tprintf(e.stderr, "pkcstok-migrate: %v\n", err)
				return 1
			}
			docs[string(k)] = src
		}
		b, _ := json.MarshalIndent(docs, "", "  ")
		e.stdout.Write(append(b, '\n'))
		return 0
	}
	src, err := schema.Source(schema.Kind(args[0]))
	if err != nil {
		fmt.Fprintf(e.stderr, "pkcstok-migrate: unknown schema %q: want one of %s\n", args[0], strings.Join(commandByName("schema").choices, ", "))
		return 1
	}
	e.stdout.Write(src)
	return 0
}

func toolVersion() string { return plan.ToolVersion }

func (o *output) hostPlan(hp *contract.HostPlan) {
	hp.Warnings = append(hp.Warnings, o.warnings...)
	var b strings.Builder
	for i := range hp.Plans {
		b.WriteString(planSummary(&hp.Plans[i]))
	}
	for _, w := range hp.Warnings {
		tprintf(&b, "warning: %s\n", w)
	}
	text := ""
	if hp.ConfDiff != "" {
		text = "\n" + safeText(hp.ConfDiff)
	}
	o.emit(hp, b.String(), text)
}

func (o *output) hostResult(r *contract.HostResult) {
	r.Warnings = append(r.Warnings, o.warnings...)
	var b strings.Builder
	for _, s := range r.Slots {
		tprintf(&b, "slot %d: %s\n", s.Slot, s.Outcome)
		if s.Result != nil {
			b.WriteString(resultSummary(s.Result))
		}
	}
	o.emit(r, b.String(), "")
}
