//go:build faultinject

package main

// Built with -tags faultinject (only by the reliability tests): fault injection through
// PKCSTOK_MIGRATE_FAULT and the pkcsslotd-check redirection are on.
func init() { testHooksEnabled = true }
