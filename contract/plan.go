package contract

// FormatVersion is the version of the plan document layout.
const FormatVersion = 1

// Plan is what `plan` prints and what `apply --plan` executes (schema "plan").
// It holds nothing derived from a PIN.
type Plan struct {
	FormatVersion int    `json:"format_version"`
	ToolVersion   string `json:"tool_version"`
	Changed       bool   `json:"changed"`

	Slot      int    `json:"slot"`
	TokenType string `json:"token_type"` // "Soft", "ICA", "CCA", "EP11"
	Stdll     string `json:"stdll"`
	UserGroup string `json:"usergroup"`
	// Group is the token group's gid on this host and the repository directory's group.
	Group     *Group `json:"group,omitempty"`
	Datastore string `json:"datastore"` // absolute, cleaned
	Confdir   string `json:"confdir"`   // absolute, cleaned
	Conf      string `json:"conf"`      // <confdir>/opencryptoki.conf

	Format Format `json:"format"` // old, 3.12 or mixed
	// ByteOrder is the byte order of the repository's host-order fields (doc/format.md §0),
	// found from its own bytes: "little-endian", "big-endian", or "any" when it holds no field
	// whose value depends on the order. ByteOrderEvidence says what showed it.
	ByteOrder         string   `json:"byte_order"`
	ByteOrderEvidence []string `json:"byte_order_evidence"`
	ConfFormat        string   `json:"conf_format"` // tokversion found in the slot: "absent", "3.12", or the old value
	PINsChecked       bool     `json:"pins_checked"`

	Token   TokenInfo `json:"token"`
	Objects []Object  `json:"objects"`
	Counts  Counts    `json:"counts"`

	KeyFiles []FileAction `json:"key_files"` // NVTOK.DAT, MK_SO, MK_USER
	// Switch is how apply would put the migrated repository in place: "exchange" (one
	// RENAME_EXCHANGE with the working copy beside it), "in_place" (the exchange cannot work
	// there, SwitchBlockedBy says why: the files are exchanged one by one inside the
	// repository under a journal) or "none" (the repository stays as it is). "blocked" (apply
	// refuses with cannot_switch) is what plans said before the in-place switch; apply still
	// refuses such a saved plan.
	Switch          Switch `json:"switch,omitempty"`
	SwitchBlockedBy string `json:"switch_blocked_by,omitempty"`
	// Backup is where apply keeps the original repository: <datastore>_BAK, or inside the
	// repository (InPlaceBak) when it is switched in place on a mount point.
	Backup   string `json:"backup,omitempty"`
	ConfDiff string `json:"conf_diff"` // unified diff, "" when the conf stays as it is

	// Space is what apply will need on each file system it writes (the datastore's, the
	// conf's), and what they have; absent when nothing is to be written. Apply refuses before
	// any work when one lacks it (no_space) or is read-only (read_only).
	Space []Space `json:"space,omitempty"`

	// LibraryTempFiles are the token library's *.TMP files found in the repository
	// (IsLibraryTemp), which apply leaves out of the 3.12 repository.
	LibraryTempFiles []string `json:"library_temp_files,omitempty"`

	Fingerprint string   `json:"fingerprint"` // "sha256:<hex>"
	Warnings    []string `json:"warnings"`
	Incomplete  []string `json:"incomplete"` // what could not be seen (e.g. private objects without PINs)
	Steps       []Step   `json:"steps"`
}

// TokenInfo is the token-info block of NVTOK.DAT (§2.1), as text.
type TokenInfo struct {
	Label           string `json:"label"`
	ManufacturerID  string `json:"manufacturer_id"`
	Model           string `json:"model"`
	SerialNumber    string `json:"serial_number"`
	Flags           string `json:"flags"` // "0x64D"
	HardwareVersion string `json:"hardware_version"`
	FirmwareVersion string `json:"firmware_version"`
}

// Object is one OBJ.IDX entry.
type Object struct {
	File      string `json:"file"`
	Private   bool   `json:"private"`
	Format    Format `json:"format"` // old or 3.12
	Class     *int64 `json:"class"`  // null when it could not be read (private, no PINs)
	ClassName string `json:"class_name,omitempty"`
	Label     string `json:"label"` // UTF-8 text of CKA_LABEL ("" when absent or unknown)
	ID        string `json:"id"`    // hex of CKA_ID ("" when absent or unknown)
	Size      int64  `json:"size"`  // current file size
	NewSize   int64  `json:"new_size,omitempty"`
	Action    Action `json:"action"` // reencrypt (private), rewrap_header (public), none (already 3.12)
}

// Counts sums up Objects.
type Counts struct {
	Total        int `json:"total"`
	Public       int `json:"public"`
	Private      int `json:"private"`
	Reencrypt    int `json:"reencrypt"`
	RewrapHeader int `json:"rewrap_header"`
	None         int `json:"none"`
}

// FileAction says what happens to one file of the repository or of the conf directory.
type FileAction struct {
	File   string `json:"file"`
	Action Action `json:"action"` // rewrite, create or none
}

// Step is one operation apply will carry out, in order.
type Step struct {
	Op   Op     `json:"op"`
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	Path string `json:"path,omitempty"`
	Note string `json:"note,omitempty"`
}

// Multi is what `plan --all-slots` prints.
type Multi struct {
	FormatVersion int           `json:"format_version"`
	Changed       bool          `json:"changed"`
	Plans         []Plan        `json:"plans"`
	Skipped       []SkippedSlot `json:"skipped"`
}

// SkippedSlot is a slot of the conf that --all-slots did not plan, and why.
type SkippedSlot struct {
	Slot   int    `json:"slot"`
	Stdll  string `json:"stdll"`
	Reason string `json:"reason"`
}

// Space is what a run needs on one file system and what the file system has.
type Space struct {
	Path string   `json:"path"` // a directory on it that the run writes
	For  []string `json:"for"`  // "repository", "conf"
	// NeedBytes and NeedInodes are what the run writes there: the working copy (every file
	// rounded up to whole blocks, with room for its 3.12 form), the journal and marks, or the
	// new conf; the margin is kept on top.
	NeedBytes    int64 `json:"need_bytes"`
	NeedInodes   int64 `json:"need_inodes"`
	MarginBytes  int64 `json:"margin_bytes"`
	MarginInodes int64 `json:"margin_inodes"`
	FreeBytes    int64 `json:"free_bytes"`
	// FreeInodes is null where the file system has no inode limit (btrfs).
	FreeInodes *int64 `json:"free_inodes"`
	ReadOnly   bool   `json:"read_only"`
	Enough     bool   `json:"enough"` // writable, and need plus margin is free
	// Device is the file system's device number, to sum several plans' needs on one file
	// system in the process that made them; not part of the document.
	Device uint64 `json:"-"`
}

// Group is the token group as this host names it and the group the repository has. When they
// differ (and the repository is not in group root), apply refuses with group_mismatch: the
// migrated files would get a gid the library of the repository's own system refuses.
type Group struct {
	Name string `json:"name"`
	// GID is the name's gid in this host's group database, null when the name is unknown here.
	GID *int `json:"gid"`
	// RepositoryGID is the group of the repository's directory now.
	RepositoryGID int `json:"repository_gid"`
}
