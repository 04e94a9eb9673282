//go:build faultinject

package apply

// WithHook returns o with hook called before each step of apply and rollback with the step's
// name; an error stops the run there as if the step had failed. Test builds only (-tags
// faultinject): the fault injection of the crash and reliability suites.
func WithHook(o Options, hook func(step string) error) Options {
	o.stepHook = hook
	return o
}
