// Package e2e holds the end-to-end suite that drives Debian's real openCryptoki 3.8.1
// (pkcsslotd, pkcsconf) and opensc's pkcs11-tool around the pkcstok-migrate binary.
//
// The suite only runs as root with PKCSTOK_E2E=1 (or CI=true); see README.md in this
// directory for how to run it alone and what it touches on the system.
package e2e
