package contract

// SlotRequest is one slot of a host request ("slots" in a Request): its own repository and
// its own PINs. PIN fields never appear in any output.
type SlotRequest struct {
	Slot        int    `json:"slot"`
	Datastore   string `json:"datastore,omitempty"`
	SOPIN       string `json:"so_pin,omitempty"`
	UserPIN     string `json:"user_pin,omitempty"`
	SOPINFile   string `json:"so_pin_file,omitempty"`
	UserPINFile string `json:"user_pin_file,omitempty"`
}

// HostPlan is what `plan` prints for a request with "slots", or with "all_slots" and per-slot
// PINs (schema "host_plan"): every slot's plan, and the one edit of the conf they make together.
type HostPlan struct {
	FormatVersion int    `json:"format_version"`
	Changed       bool   `json:"changed"`
	Confdir       string `json:"confdir"`
	Conf          string `json:"conf"`
	// ConfDiff is the unified diff of the conf after every slot's tokversion is set.
	ConfDiff string `json:"conf_diff"`
	Plans    []Plan `json:"plans"`
	// Space sums the slots' needs per file system.
	Space    []Space  `json:"space,omitempty"`
	Warnings []string `json:"warnings"`
}

// Outcome is what a host run did to one slot.
type Outcome string

const (
	OutcomeMigrated     Outcome = "migrated"      // the slot is migrated (repository, conf or both changed)
	OutcomeUnchanged    Outcome = "unchanged"     // nothing to do: already migrated, or already rolled back
	OutcomeRolledBack   Outcome = "rolled_back"   // rollback switched it back
	OutcomeSwitchedBack Outcome = "switched_back" // migrated by this run, then switched back because another slot failed
	OutcomeFailed       Outcome = "failed"        // this slot's step failed (Error says why)
	OutcomeNotStarted   Outcome = "not_started"   // the run stopped before this slot was touched
)

// SlotOutcome is one slot of a HostResult.
type SlotOutcome struct {
	Slot    int        `json:"slot"`
	Outcome Outcome    `json:"outcome"`
	Result  *Result    `json:"result,omitempty"`
	Error   *ErrorBody `json:"error,omitempty"`
}

// ErrorBody is an error as documents carry it (schema "error", "error" member).
type ErrorBody struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// HostResult is what `apply` and `rollback` print for a request with "slots" (schema
// "host_result"). On failure the error document's details carry "slots": the same
// SlotOutcome list, so automation learns per slot what happened.
type HostResult struct {
	Changed     bool          `json:"changed"`
	Operation   string        `json:"operation"` // "apply" or "rollback"
	Confdir     string        `json:"confdir"`
	Conf        string        `json:"conf"`
	ConfChanged bool          `json:"conf_changed"`
	ConfDiff    string        `json:"conf_diff"`
	Slots       []SlotOutcome `json:"slots"`
	Warnings    []string      `json:"warnings"`
}
