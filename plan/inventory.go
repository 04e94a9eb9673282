package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
)

// DefaultFIPSFile is where Linux says whether it runs in FIPS mode.
const DefaultFIPSFile = "/proc/sys/crypto/fips_enabled"

// readFIPS reads file ("" = DefaultFIPSFile): "1" is on, "0" is off; a missing file (a kernel
// without CONFIG_CRYPTO_FIPS) is off.
func readFIPS(file string) contract.FIPSMode {
	if file == "" {
		file = DefaultFIPSFile
	}
	m := contract.FIPSMode{File: file}
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		off := false
		m.Enabled, m.Reason = &off, "not present: the kernel has no FIPS mode"
	case err != nil:
		m.Reason = fmt.Sprintf("could not read it: %v", err)
	default:
		switch v := strings.TrimSpace(string(b)); v {
		case "0", "1":
			on := v == "1"
			m.Enabled = &on
		default:
			m.Reason = fmt.Sprintf("unexpected content %q", v)
		}
	}
	return m
}

// MakeInventory reads opencryptoki.conf in o.Confdir and every slot's repository (under
// o.StateBase), without PINs. It never writes. Only a conf that cannot be read or parsed is
// an error; everything about a slot is reported in its SlotInfo.
func MakeInventory(o Options) (*contract.Inventory, error) {
	if o.Confdir == "" {
		return nil, &contract.Error{Code: contract.CodeBadRequest, Field: "confdir", Message: "confdir is required"}
	}
	if o.StateBase == "" {
		o.StateBase = layout.DefaultStateBase
	}
	confdir, err := filepath.Abs(o.Confdir)
	if err != nil {
		return nil, contract.Errorf(contract.CodeBadRequest, "confdir %s: %w", o.Confdir, err)
	}
	stateBase, err := filepath.Abs(o.StateBase)
	if err != nil {
		return nil, contract.Errorf(contract.CodeBadRequest, "state dir %s: %w", o.StateBase, err)
	}
	cf, _, confWarnings, err := readConf(confdir)
	if err != nil {
		return nil, err
	}
	inv := &contract.Inventory{
		FormatVersion: contract.FormatVersion,
		ToolVersion:   ToolVersion,
		Confdir:       confdir,
		Conf:          filepath.Join(confdir, layout.ConfName),
		StateDir:      stateBase,
		ConfBackup:    exists(confdir, layout.ConfBakName),
		Slots:         []contract.SlotInfo{},
		Warnings:      append([]string{}, confWarnings...),
	}
	slots, err := cf.Slots()
	if err != nil {
		inv.Warnings = append(inv.Warnings, fmt.Sprintf("slots left out: %v", err))
	}
	for _, s := range slots {
		si := contract.SlotInfo{
			Slot:       s.ID,
			Stdll:      s.Stdll,
			TokenType:  contract.TokenTypeUnsupported,
			Datastore:  s.RepositoryDir(stateBase),
			TokVersion: confFormat(s),
			Warnings:   []string{},
		}
		si.Files.ConfBackup = inv.ConfBackup
		if si.Datastore != "" {
			parent, base := filepath.Dir(si.Datastore), filepath.Base(si.Datastore)
			// The in-place switch keeps its entries inside the repository.
			si.Files.Backup = exists(parent, base+layout.SuffixBak) || exists(si.Datastore, layout.InPlaceBak)
			si.Files.RolledBack = exists(parent, base+layout.SuffixRolledBack) || exists(si.Datastore, layout.InPlaceRolledBack)
			si.Files.HostJournal = journalNames(confdir, s.ID)
			si.Files.Journal = exists(parent, base+layout.SuffixJournal)
			si.Files.WorkingCopy = exists(parent, base+layout.SuffixTmp) || exists(si.Datastore, layout.InPlaceTmp)
		}
		if !s.Type.Supported() {
			si.Reason = fmt.Sprintf("stdll %s is not a Soft, ICA, CCA or EP11 token: not examined", s.Stdll)
			inv.Slots = append(inv.Slots, si)
			continue
		}
		si.TokenType = s.Type.String()
		inspectSlot(&si, o, confdir, stateBase, s.TokVersionIs312())
		inv.NeedsMigration = inv.NeedsMigration || si.NeedsMigration
		inv.Slots = append(inv.Slots, si)
	}
	inv.FIPS = readFIPS(o.FIPSFile)
	if inv.FIPS.Enabled != nil && *inv.FIPS.Enabled {
		var old []string
		for _, si := range inv.Slots {
			if si.Format == contract.FormatOld || si.Format == contract.FormatMixed {
				old = append(old, strconv.Itoa(si.Slot))
			}
		}
		if len(old) > 0 {
			inv.FIPS.OldFormatBroken = true
			// What was measured (e2e TestFIPS, Debian's OpenSSL FIPS provider, openCryptoki 3.27)
			// and what upstream reports for RHEL 9 (issue #527); nothing more.
			inv.Warnings = append(inv.Warnings, fmt.Sprintf("the kernel runs in FIPS mode (%s = 1) and slot(s) %s are in the old format, whose keys need MD5: "+
				"upstream's pkcstok_migrate cannot migrate them under a FIPS OpenSSL (measured with Debian's FIPS provider; reported for RHEL 9 in upstream issue #527, "+
				"which says to migrate before enabling FIPS); openCryptoki 3.27 on Debian still opens them with its own OpenSSL context, other builds may not; "+
				"migrate them with this tool, which does not depend on the FIPS setting", inv.FIPS.File, strings.Join(old, ", ")))
		}
	}
	return inv, nil
}

// inspectSlot fills format, objects, label and needs_migration from a plan made without PINs.
func inspectSlot(si *contract.SlotInfo, o Options, confdir, stateBase string, conf312 bool) {
	if si.Datastore == "" {
		si.Format = contract.FormatUnreadable
		si.Reason = "the slot's tokname is not a usable directory name"
		return
	}
	if reason, missing := repositoryMissing(si.Datastore); missing {
		si.Format = contract.FormatMissing
		si.Reason = reason
		return
	}
	po := Options{Slot: si.Slot, Confdir: confdir, StateBase: stateBase, ProcRoot: o.ProcRoot, PIDFiles: o.PIDFiles}
	p, err := Make(po)
	if err != nil {
		si.Format = contract.FormatUnreadable
		si.Reason = fmt.Sprintf("%s: %v", contract.CodeOf(err), err)
		if contract.CodeOf(err) == contract.CodeRewrittenByLibrary {
			si.Migration, si.Advice = contract.MigrationDamaged, err.Error()
		}
		return
	}
	si.Format = p.Format
	si.ByteOrder = p.ByteOrder
	n := p.Counts.Total
	si.Objects = &n
	si.Label = p.Token.Label
	si.Warnings = append(si.Warnings, p.Warnings...)
	si.NeedsMigration = p.Format != contract.Format312 || !conf312
	si.Migration, si.Advice = migrationState(si, p.Format, conf312)
}

// migrationState says where a slot stands, and what to do when something is left.
func migrationState(si *contract.SlotInfo, format contract.Format, conf312 bool) (string, string) {
	unfinished := si.Files.Journal || si.Files.WorkingCopy || si.Files.HostJournal
	switch {
	case format == contract.Format312 && !conf312:
		return contract.MigrationPending, "the repository is migrated but the conf does not say tokversion = 3.12: run apply now, before pkcsslotd starts (the token library would rewrite NVTOK.DAT of the migrated repository)"
	case format == contract.FormatOld && conf312:
		return contract.MigrationPending, "the conf says tokversion = 3.12 but the repository is old (an apply did not finish): run apply to finish it, or rollback to revert the conf line; the token library refuses the slot until then, without harm"
	case unfinished:
		return contract.MigrationPending, "a run did not finish: run apply to finish it, or rollback to revert it"
	case format == contract.Format312:
		return contract.MigrationDone, ""
	case format == contract.FormatOld && si.Files.RolledBack:
		return contract.MigrationRolledBack, ""
	case format == contract.FormatOld:
		return contract.MigrationNone, ""
	}
	return contract.MigrationPending, "the repository mixes old and 3.12 files: check it by hand"
}

// journalNames reports whether the host journal in confdir names the slot (only a journal
// that parses is read; info never writes).
func journalNames(confdir string, slot int) bool {
	b, err := os.ReadFile(filepath.Join(confdir, layout.HostJournal))
	if err != nil {
		return false
	}
	var j struct {
		Slots []struct {
			Slot int `json:"slot"`
		} `json:"slots"`
	}
	if json.Unmarshal(b, &j) != nil {
		return false
	}
	for _, s := range j.Slots {
		if s.Slot == slot {
			return true
		}
	}
	return false
}

// repositoryMissing tells whether the repository directory or its NVTOK.DAT does not exist:
// a token that was never initialised, or a slot without a token on this host.
func repositoryMissing(ds string) (string, bool) {
	st, err := os.Lstat(ds)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("%s does not exist", ds), true
	}
	if err != nil || !st.IsDir() {
		return "", false // Make reports it
	}
	if _, err := os.Lstat(filepath.Join(ds, "NVTOK.DAT")); errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("%s holds no NVTOK.DAT: the token was never initialised", ds), true
	}
	return "", false
}
