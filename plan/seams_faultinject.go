//go:build faultinject

package plan

// ForceSwitch makes o plan the in-place switch where the exchange would work: "in_place" (the
// backup beside the repository, as on an overlay) or "in_place_inside" (the backup inside
// it, as on a mount point). Test builds only (-tags faultinject), so that the crash and CLI
// suites cover the in-place switch on any file system.
func ForceSwitch(o *Options, how string) { o.forceSwitch = how }
