package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/plan"
)

// runInfo reports every slot of opencryptoki.conf (plan.MakeInventory). It needs no PINs and
// never writes; it fails only when the conf cannot be read.
func runInfo(e *env, args []string) int {
	c := commandByName("info")
	out := &output{e: e, json: true}
	v, rest, err := c.parse(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(e.stdout, c.help())
			return 0
		}
		return out.fail(&contract.Error{Code: contract.CodeBadRequest, Message: err.Error()})
	}
	out.json = v.b("json")
	if len(rest) > 0 {
		return out.fail(&contract.Error{Code: contract.CodeBadRequest, Message: fmt.Sprintf("unexpected argument %q", rest[0])})
	}
	o := plan.Options{Confdir: v.s("confdir"), StateBase: v.s("state-dir")}
	if o.Confdir == "" {
		o.Confdir = defaultConfdir
	}
	ao := applyOptions(e, out)
	o.ProcRoot, o.PIDFiles = ao.ProcRoot, ao.PIDFiles
	o.FIPSFile = e.seams().fipsFile
	inv, err := plan.MakeInventory(o)
	if err != nil {
		return out.fail(err)
	}
	out.emit(inv, infoSummary(inv), "")
	return 0
}

func infoSummary(inv *contract.Inventory) string {
	var b strings.Builder
	tprintf(&b, "%s: %d slot(s)", inv.Conf, len(inv.Slots))
	if inv.NeedsMigration {
		b.WriteString(", needs migrating")
	}
	b.WriteString("\n")
	// FIPS mode is the kernel's flag (f.File): OpenSSL's own configuration is not read.
	switch f := inv.FIPS; {
	case f.Enabled == nil:
		tprintf(&b, "FIPS mode: unknown (%s: %s)\n", f.File, f.Reason)
	case *f.Enabled && f.OldFormatBroken:
		tprintf(&b, "FIPS mode: on (%s), old-format slots: upstream's pkcstok_migrate cannot migrate them under FIPS; migrate them with this tool\n", f.File)
	case *f.Enabled:
		tprintf(&b, "FIPS mode: on (%s)\n", f.File)
	default:
		tprintf(&b, "FIPS mode: off (%s)\n", f.File)
	}
	for _, s := range inv.Slots {
		tprintf(&b, "slot %d: %s (%s)", s.Slot, s.TokenType, s.Stdll)
		if s.TokenType == contract.TokenTypeUnsupported {
			b.WriteString(": not examined\n")
			continue
		}
		tprintf(&b, ", %s: %s format", s.Datastore, s.Format)
		if s.ByteOrder != "" {
			tprintf(&b, ", %s", s.ByteOrder)
		}
		if s.Objects != nil {
			tprintf(&b, ", %d object(s)", *s.Objects)
		}
		tprintf(&b, ", conf tokversion %s", s.TokVersion)
		if s.NeedsMigration {
			b.WriteString(", NEEDS MIGRATION")
		}
		b.WriteString("\n")
		if s.Reason != "" {
			tprintf(&b, "  %s\n", s.Reason)
		}
		var have []string
		for _, f := range []struct {
			ok   bool
			name string
		}{
			{s.Files.Backup, s.Datastore + layout.SuffixBak},
			{s.Files.RolledBack, s.Datastore + layout.SuffixRolledBack},
			{s.Files.Journal, s.Datastore + layout.SuffixJournal},
			{s.Files.WorkingCopy, s.Datastore + layout.SuffixTmp},
		} {
			if f.ok {
				have = append(have, f.name)
			}
		}
		if len(have) > 0 {
			tprintf(&b, "  exists: %s\n", strings.Join(have, ", "))
		}
		for _, w := range s.Warnings {
			tprintf(&b, "  warning: %s\n", w)
		}
	}
	if inv.ConfBackup {
		tprintf(&b, "exists: %s_BAK\n", inv.Conf)
	}
	for _, w := range inv.Warnings {
		tprintf(&b, "warning: %s\n", w)
	}
	return b.String()
}
