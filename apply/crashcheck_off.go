//go:build !crashcheck_nojournalsync

package apply

// syncJournal is false only in the self-check build of the power-loss crash test
// (crash/README.md): every other build makes the journal durable before the exchange.
const syncJournal = true
