// Package crash holds the power-loss crash test (crash_test.go): the real
// pkcstok-migrate binary runs under strace, crashsim (crash/crashsim) turns the trace into the file
// system states a power cut at each step could leave, and each state is "rebooted" into and
// checked with the real binary. See README.md. The package has no code of its own.
package crash
