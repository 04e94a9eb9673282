//go:build crashcheck_nojournalsync

package apply

// Built with -tags crashcheck_nojournalsync only by the power-loss crash test's self-check
// (crash/README.md): the journal is not made durable before the exchange. After a power cut
// the exchange may survive with an empty journal; the crash test must catch that.
const syncJournal = false
