//go:build !faultinject

package main

import (
	"os"
	"testing"
)

// recordSteps needs apply's step hook, which only builds with -tags faultinject have (make
// unit and every suite build with it).
func recordSteps(t *testing.T, _ *token, _, _ string) []string {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal("the step list needs apply's hook: test with -tags faultinject (make unit)")
	}
	t.Skip("the step list needs apply's hook: test with -tags faultinject (make unit)")
	return nil
}
