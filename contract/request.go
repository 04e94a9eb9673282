package contract

// Request is what a caller asks for, as flags or as one JSON document (schema "request").
// PIN fields never appear in any output.
type Request struct {
	Slot        *int   `json:"slot,omitempty"`
	Datastore   string `json:"datastore,omitempty"`
	Confdir     string `json:"confdir,omitempty"`
	SOPIN       string `json:"so_pin,omitempty"`
	UserPIN     string `json:"user_pin,omitempty"`
	SOPINFile   string `json:"so_pin_file,omitempty"`
	UserPINFile string `json:"user_pin_file,omitempty"`
	PlanFile    string `json:"plan_file,omitempty"`
	AllSlots    bool   `json:"all_slots,omitempty"`
	// Slots asks for several slots of the conf in one run, each with its own PINs: a host.
	// It replaces Slot, Datastore and the PIN fields (bad_request when both are given).
	Slots []SlotRequest `json:"slots,omitempty"`
	// Backup is, for remove-backups, the backup object an apply printed: only the entries it
	// names with their identity are removed, and only while they are those files.
	Backup *Backup `json:"backup,omitempty"`
}

// Backup names the backups of a migration. The identity (device and inode) of an entry is
// given only when this run made it: it is what remove-backups checks before removing
// anything, so that no entry is ever removed by its name alone.
type Backup struct {
	Datastore    string `json:"datastore,omitempty"` // <datastore>_BAK, or the in-place backup
	DatastoreDev uint64 `json:"datastore_dev,omitempty"`
	DatastoreIno uint64 `json:"datastore_ino,omitempty"`
	Conf         string `json:"conf,omitempty"` // <confdir>/opencryptoki.conf_BAK
	ConfDev      uint64 `json:"conf_dev,omitempty"`
	ConfIno      uint64 `json:"conf_ino,omitempty"`
}
