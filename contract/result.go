package contract

// Result is what `apply` and `rollback` print on success (schema "result").
type Result struct {
	Changed           bool     `json:"changed"`
	Operation         string   `json:"operation"` // "apply", "rollback" or "remove_backups"
	Slot              int      `json:"slot"`
	TokenType         string   `json:"token_type"`
	Datastore         string   `json:"datastore"`
	Conf              string   `json:"conf"`
	Backup            *Backup  `json:"backup,omitempty"`
	ObjectsMigrated   int      `json:"objects_migrated"`
	ObjectsTotal      int      `json:"objects_total"`
	RepositoryChanged bool     `json:"repository_changed"`
	ConfChanged       bool     `json:"conf_changed"`
	ConfDiff          string   `json:"conf_diff"`
	Verified          bool     `json:"verified"`
	Fingerprint       string   `json:"fingerprint"` // of the state after the run
	Warnings          []string `json:"warnings"`
	Steps             []Op     `json:"steps"`             // steps carried out, in order
	Removed           []string `json:"removed,omitempty"` // remove-backups: what it removed
}
