// Package doc holds the repository's format reference, format.md: the on-disk formats of
// openCryptoki token repositories and what upstream's pkcstok_migrate does with them. Code
// and documents cite its sections as §N or §N.M. The package has no code; its test checks
// that every citation in the repository names a section of format.md.
package doc
