package contract

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
	// FIPS is the host's FIPS mode as the kernel reports it. Under a FIPS OpenSSL upstream's
	// pkcstok_migrate cannot migrate old-format tokens (measured with Debian's provider, which
	// left the 3.27 library opening them); on RHEL upstream reports worse (issue #527).
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
	Format Format `json:"format"`
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
	NeedsMigration bool `json:"needs_migration"`
	// Migration is where the slot stands: MigrationNone, MigrationDone, MigrationPending,
	// MigrationRolledBack or MigrationDamaged; "" when the repository was not examined.
	// Advice says what to do when something is left to do.
	Migration string   `json:"migration"`
	Advice    string   `json:"advice,omitempty"`
	Warnings  []string `json:"warnings"`
}

// Where a slot stands (SlotInfo.Migration).
const (
	MigrationNone       = "not_migrated" // old repository, no tokversion = 3.12, never rolled back
	MigrationDone       = "migrated"     // 3.12 repository and tokversion = 3.12
	MigrationPending    = "pending"      // a run is unfinished, or the repository and the conf disagree
	MigrationRolledBack = "rolled_back"  // old repository, no tokversion = 3.12, a rolled-back one beside it
	MigrationDamaged    = "damaged"      // the token library rewrote NVTOK.DAT of a migrated repository
)

// FIPSMode is the host's FIPS setting as info read it. It is only reported: plan and apply
// never read it, so they work the same on a host in FIPS mode (the migration is the way out
// of a broken FIPS host, not something to refuse there).
type FIPSMode struct {
	File    string `json:"file"`    // the file read (DefaultFIPSFile)
	Enabled *bool  `json:"enabled"` // null when the file could not be read (Reason says why)
	Reason  string `json:"reason,omitempty"`
	// OldFormatBroken: FIPS is on and at least one slot is old or mixed: upstream's tool
	// cannot migrate those tokens now (the name predates the measurement; README, FIPS).
	OldFormatBroken bool `json:"old_format_broken"`
}

// SlotFiles tells which backups, journals and working copies exist next to a repository.
type SlotFiles struct {
	Backup      bool `json:"backup"`       // <store>_BAK, or <store>/PKCSTOK_MIGRATE_BAK (in place)
	RolledBack  bool `json:"rolled_back"`  // <store>_ROLLED_BACK, or <store>/PKCSTOK_MIGRATE_ROLLED_BACK
	Journal     bool `json:"journal"`      // <store>_PKCSTOK_MIGRATE_JOURNAL
	WorkingCopy bool `json:"working_copy"` // <store>_PKCSTOK_MIGRATE_TMP, or <store>/PKCSTOK_MIGRATE_TMP (an in-place switch's, its journal inside)
	ConfBackup  bool `json:"conf_backup"`  // <confdir>/opencryptoki.conf_BAK
	HostJournal bool `json:"host_journal"` // <confdir>/opencryptoki.conf_PKCSTOK_MIGRATE_JOURNAL names the slot
}

// TokenTypeUnsupported is SlotInfo.TokenType for a slot whose token cannot be migrated.
const TokenTypeUnsupported = "unsupported"
