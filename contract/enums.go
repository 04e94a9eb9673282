package contract

// The enumerations of the documents, with their JSON names: every comparison and every
// assignment of these fields uses the constants.

// Format is a repository's (or an object's) format.
type Format string

const (
	FormatOld   Format = "old"
	Format312   Format = "3.12"
	FormatMixed Format = "mixed" // old and 3.12 files: refused
	// Reported by info only.
	FormatMissing    Format = "missing"    // no repository, or no NVTOK.DAT in it
	FormatUnreadable Format = "unreadable" // SlotInfo.Reason says why
)

// Switch is how apply puts the migrated repository in place.
type Switch string

const (
	SwitchExchange Switch = "exchange" // one RENAME_EXCHANGE with the working copy beside it
	SwitchInPlace  Switch = "in_place" // file by file inside the repository, under a journal
	SwitchNone     Switch = "none"     // the repository stays as it is
	// SwitchBlocked is what plans of earlier versions said where the exchange cannot work;
	// apply refuses such a saved plan (cannot_switch).
	SwitchBlocked Switch = "blocked"
)

// Action is what happens to an object or a file.
type Action string

const (
	ActionReencrypt    Action = "reencrypt"     // a private object
	ActionRewrapHeader Action = "rewrap_header" // a public object
	ActionRewrite      Action = "rewrite"       // a key file
	ActionCreate       Action = "create"        // a key file the repository lacks
	ActionNone         Action = "none"          // already 3.12
)

// Op is a step of apply, rollback or remove-backups: the one vocabulary of a plan's steps, a
// result's steps and the points where a test build's fault injection can stop a run (the
// finer ones below are never in a document).
type Op string

const (
	OpLock             Op = "lock"
	OpCopy             Op = "copy"
	OpWriteKeys        Op = "write_keys"
	OpReencrypt        Op = "reencrypt"
	OpVerify           Op = "verify"
	OpExchange         Op = "exchange"
	OpSwitchInPlace    Op = "switch_in_place"
	OpBackup           Op = "backup"
	OpRemoveShm        Op = "remove_shm"
	OpConfEdit         Op = "conf_edit"
	OpKeepMigrated     Op = "keep_migrated"
	OpConfRestore      Op = "conf_restore"
	OpRemoveBackup     Op = "remove_backup"
	OpRemoveConfBackup Op = "remove_conf_backup"
)

// The finer points apply's fault injection can stop at (test builds); never in a document.
const (
	OpLocked            Op = "locked"              // the locks are taken
	OpHostJournal       Op = "host_journal"        // before the host journal is written
	OpHostJournalRemove Op = "host_journal_remove" // before the kept conf and the host journal go
	OpSync              Op = "sync"                // before the working copy is made durable
	OpJournal           Op = "journal"             // before the journal is written
	OpSwitchEntry       Op = "switch_entry"        // before each file of an in-place switch
	OpJournalRemove     Op = "journal_remove"      // before the journal goes
	OpRollbackExchange  Op = "rollback_exchange"
	OpRollbackRename    Op = "rollback_rename"
	OpRollbackConf      Op = "rollback_conf"
	OpObject            Op = "object" // "object NAME": before an object is re-encrypted
	OpWrite             Op = "write"  // "write REL": before a file of the working copy is written
)

// Of names a point of op for one file ("object OB000001").
func (op Op) Of(name string) Op { return op + " " + Op(name) }
