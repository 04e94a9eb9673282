// Package layout names the entries pkcstok-migrate makes and finds beside a token repository,
// inside it, and in the conf directory (doc/format.md §1.3): the working copy, the journal,
// the backups, what a rollback keeps, and the in-place switch's entries. It holds names only.
package layout

// DefaultStateBase is where the token library keeps the repositories (CONFIG_PATH,
// doc/format.md §1.1).
const DefaultStateBase = "/var/lib/opencryptoki"

// Beside the repository <store>, in its parent directory.
const (
	SuffixTmp        = "_PKCSTOK_MIGRATE_TMP"     // the working copy of the exchange
	SuffixBak        = "_BAK"                     // the original, after the switch
	SuffixJournal    = "_PKCSTOK_MIGRATE_JOURNAL" // the exchange's journal
	SuffixRolledBack = "_ROLLED_BACK"             // the migrated repository, after a rollback
	SuffixDiscard    = "_PKCSTOK_MIGRATE_DISCARD" // remove-backups' private scratch directory
)

// In the conf directory.
const (
	ConfName    = "opencryptoki.conf"
	ConfBakName = "opencryptoki.conf_BAK" // the conf from before the first migration: never replaced
	// HostJournal names the slots of a run under way (apply or its undo): a rerun of the same
	// slots finishes it, rollback reverts it, a run of other slots is refused meanwhile.
	HostJournal = "opencryptoki.conf_PKCSTOK_MIGRATE_JOURNAL"
	// ConfPrev is the conf as it was before the run under way, a hard link kept until the run
	// ends: a run that fails puts it back with one rename (which allocates nothing).
	ConfPrev = "opencryptoki.conf_PKCSTOK_MIGRATE_PREV"
)

// Inside a repository switched in place (a mount point, an overlay's lower layer): the working
// copy with its journal, and the original kept there when the parent directory cannot hold it.
// They are not part of the token: every walk of a repository (the plan's scan, the
// fingerprint, the copy) leaves them out (Reserved).
const (
	InPlaceTmp        = "PKCSTOK_MIGRATE_TMP"
	InPlaceJournal    = "PKCSTOK_MIGRATE_JOURNAL" // inside InPlaceTmp
	InPlaceBak        = "PKCSTOK_MIGRATE_BAK"
	InPlaceRolledBack = "PKCSTOK_MIGRATE_ROLLED_BACK"
	InPlaceDiscard    = "PKCSTOK_MIGRATE_DISCARD" // remove-backups' scratch for InPlaceBak
)

// Inside a working copy: marks only root can have made there.
const (
	WorkingCopyMarker = "PKCSTOK_MIGRATE_WORKING_COPY" // names the repository it copies
	BackupMark        = "PKCSTOK_MIGRATE_BACKUP"       // an in-place working copy that became the backup
)

// Reserved reports whether rel (slash-separated, relative to the repository) is one of the
// entries of an in-place switch at the repository's top level.
func Reserved(rel string) bool {
	switch rel {
	case InPlaceTmp, InPlaceJournal, InPlaceBak, InPlaceRolledBack, InPlaceDiscard:
		return true
	}
	return false
}
