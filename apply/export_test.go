//go:build !faultinject

package apply

// WithHook is seams_faultinject.go's, for this package's tests in a build without the tag.
func WithHook(o Options, hook func(step string) error) Options {
	o.stepHook = hook
	return o
}
