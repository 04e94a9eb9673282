package plan

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// SuffixRolledBack names what rollback keeps of the migrated state (<store>_ROLLED_BACK).
const SuffixRolledBack = "_ROLLED_BACK"

// Inventory is what `info` prints (schema "info"): every slot of opencryptoki.conf, read
// without PINs. It holds nothing derived from a PIN.
type Inventory struct {
	FormatVersion  int    `json:"format_version"`
	ToolVersion    string `json:"tool_version"`
	Confdir        string `json:"confdir"`     // absolute
	Conf           string `json:"conf"`        // <confdir>/opencryptoki.conf
	StateDir       string `json:"state_dir"`   // where the repositories of the slots are (CONFIG_PATH)
	ConfBackup     bool   `json:"conf_backup"` // <confdir>/opencryptoki.conf_BAK exists
	NeedsMigration bool   `json:"needs_migration"`
	// FIPS is the host's FIPS mode: openCryptoki cannot open old-format tokens once it is on
	// (upstream issue #527), so a host with FIPS on and an old or mixed slot is broken now.
	FIPS FIPSMode `json:"fips"`
	// Slots lists every slot of the conf, in file order; slots the conf describes so badly
	// that they cannot be listed are named in Warnings.
	Slots    []SlotInfo `json:"slots"`
	Warnings []string   `json:"warnings"`
}

// SlotInfo is one slot of the conf as `info` sees it.
type SlotInfo struct {
	Slot      int    `json:"slot"`
	Stdll     string `json:"stdll"`
	TokenType string `json:"token_type"` // "Soft", "ICA", "CCA", "EP11" or "unsupported"
	Datastore string `json:"datastore"`  // the repository the token library uses ("" when the conf names none)
	// Format: "old", "3.12", "mixed", "missing" (no repository, or no NVTOK.DAT in it),
	// "unreadable" (Reason says why), or "" for an unsupported token (not examined).
	Format string `json:"format"`
	Reason string `json:"reason,omitempty"`
	// ByteOrder of the repository's host-order fields: "big-endian", "little-endian", or
	// "any" when nothing in it depends on the order; "" when the repository was not read.
	ByteOrder  string `json:"byte_order"`
	Objects    *int   `json:"objects"`    // objects listed in OBJ.IDX; null when not known
	TokVersion string `json:"tokversion"` // the slot's tokversion as written, "absent" when there is none
	Label      string `json:"label"`      // the token label from NVTOK.DAT ("" when not known)
	// Files says which of the migration's sibling files exist.
	Files SlotFiles `json:"files"`
	// NeedsMigration: the repository is old or mixed, or it is 3.12 and the conf does not
	// say so yet: a plan would have changes to make.
	NeedsMigration bool     `json:"needs_migration"`
	Warnings       []string `json:"warnings"`
}

// DefaultFIPSFile is where Linux says whether it runs in FIPS mode.
const DefaultFIPSFile = "/proc/sys/crypto/fips_enabled"

// FIPSMode is the host's FIPS setting as info read it. It is only reported: plan and apply
// never read it, so they work the same on a host in FIPS mode (the migration is the way out
// of a broken FIPS host, not something to refuse there).
type FIPSMode struct {
	File    string `json:"file"`    // the file read (DefaultFIPSFile)
	Enabled *bool  `json:"enabled"` // null when the file could not be read (Reason says why)
	Reason  string `json:"reason,omitempty"`
	// OldFormatBroken: FIPS is on and at least one slot is old or mixed: openCryptoki
	// cannot open those tokens now.
	OldFormatBroken bool `json:"old_format_broken"`
}

// ReadFIPS reads file ("" = DefaultFIPSFile): "1" is on, "0" is off; a missing file (a kernel
// without CONFIG_CRYPTO_FIPS) is off.
func ReadFIPS(file string) FIPSMode {
	if file == "" {
		file = DefaultFIPSFile
	}
	m := FIPSMode{File: file}
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

// SlotFiles tells which backups, journals and working copies exist next to a repository.
type SlotFiles struct {
	Backup      bool `json:"backup"`       // <store>_BAK, or <store>/PKCSTOK_MIGRATE_BAK (in place)
	RolledBack  bool `json:"rolled_back"`  // <store>_ROLLED_BACK, or <store>/PKCSTOK_MIGRATE_ROLLED_BACK
	Journal     bool `json:"journal"`      // <store>_PKCSTOK_MIGRATE_JOURNAL
	WorkingCopy bool `json:"working_copy"` // <store>_PKCSTOK_MIGRATE_TMP, or <store>/PKCSTOK_MIGRATE_TMP (an in-place switch's, its journal inside)
	ConfBackup  bool `json:"conf_backup"`  // <confdir>/opencryptoki.conf_BAK
}

// TokenTypeUnsupported is SlotInfo.TokenType for a slot whose token cannot be migrated.
const TokenTypeUnsupported = "unsupported"

// Inventory formats beyond the plan's "old", "3.12" and "mixed".
const (
	FormatMissing    = "missing"
	FormatUnreadable = "unreadable"
)

// MakeInventory reads opencryptoki.conf in o.Confdir and every slot's repository (under
// o.StateBase), without PINs. It never writes. Only a conf that cannot be read or parsed is
// an error; everything about a slot is reported in its SlotInfo.
func MakeInventory(o Options) (*Inventory, error) {
	if o.Confdir == "" {
		return nil, &Error{Code: CodeBadRequest, Field: "confdir", Message: "confdir is required"}
	}
	if o.StateBase == "" {
		o.StateBase = DefaultStateBase
	}
	confdir, err := filepath.Abs(o.Confdir)
	if err != nil {
		return nil, Errorf(CodeBadRequest, "confdir %s: %w", o.Confdir, err)
	}
	stateBase, err := filepath.Abs(o.StateBase)
	if err != nil {
		return nil, Errorf(CodeBadRequest, "state dir %s: %w", o.StateBase, err)
	}
	cf, _, confWarnings, err := readConf(confdir)
	if err != nil {
		return nil, err
	}
	inv := &Inventory{
		FormatVersion: FormatVersion,
		ToolVersion:   ToolVersion,
		Confdir:       confdir,
		Conf:          filepath.Join(confdir, ConfName),
		StateDir:      stateBase,
		ConfBackup:    exists(confdir, ConfBakName),
		Slots:         []SlotInfo{},
		Warnings:      append([]string{}, confWarnings...),
	}
	slots, err := cf.Slots()
	if err != nil {
		inv.Warnings = append(inv.Warnings, fmt.Sprintf("slots left out: %v", err))
	}
	for _, s := range slots {
		si := SlotInfo{
			Slot:       s.ID,
			Stdll:      s.Stdll,
			TokenType:  TokenTypeUnsupported,
			Datastore:  s.RepositoryDir(stateBase),
			TokVersion: confFormat(s),
			Warnings:   []string{},
		}
		si.Files.ConfBackup = inv.ConfBackup
		if si.Datastore != "" {
			parent, base := filepath.Dir(si.Datastore), filepath.Base(si.Datastore)
			// The in-place switch keeps its entries inside the repository.
			si.Files.Backup = exists(parent, base+SuffixBak) || exists(si.Datastore, InPlaceBak)
			si.Files.RolledBack = exists(parent, base+SuffixRolledBack) || exists(si.Datastore, InPlaceRolledBack)
			si.Files.Journal = exists(parent, base+SuffixJournal)
			si.Files.WorkingCopy = exists(parent, base+SuffixTmp) || exists(si.Datastore, InPlaceTmp)
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
	inv.FIPS = ReadFIPS(o.FIPSFile)
	if inv.FIPS.Enabled != nil && *inv.FIPS.Enabled {
		var old []string
		for _, si := range inv.Slots {
			if si.Format == "old" || si.Format == "mixed" {
				old = append(old, strconv.Itoa(si.Slot))
			}
		}
		if len(old) > 0 {
			inv.FIPS.OldFormatBroken = true
			inv.Warnings = append(inv.Warnings, fmt.Sprintf("the host runs in FIPS mode and slot(s) %s are in the old format: openCryptoki cannot open them now (upstream issue #527); migrate them (this tool does not depend on the FIPS setting)", strings.Join(old, ", ")))
		}
	}
	return inv, nil
}

// inspectSlot fills format, objects, label and needs_migration from a plan made without PINs.
func inspectSlot(si *SlotInfo, o Options, confdir, stateBase string, conf312 bool) {
	if si.Datastore == "" {
		si.Format = FormatUnreadable
		si.Reason = "the slot's tokname is not a usable directory name"
		return
	}
	if reason, missing := repositoryMissing(si.Datastore); missing {
		si.Format = FormatMissing
		si.Reason = reason
		return
	}
	po := Options{Slot: si.Slot, Confdir: confdir, StateBase: stateBase, ProcRoot: o.ProcRoot, PIDFiles: o.PIDFiles}
	p, err := Make(po)
	if err != nil {
		si.Format = FormatUnreadable
		si.Reason = fmt.Sprintf("%s: %v", CodeOf(err), err)
		return
	}
	si.Format = p.Format
	si.ByteOrder = p.ByteOrder
	n := p.Counts.Total
	si.Objects = &n
	si.Label = p.Token.Label
	si.Warnings = append(si.Warnings, p.Warnings...)
	si.NeedsMigration = p.Format != "3.12" || !conf312
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
