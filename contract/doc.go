// Package contract holds the documents pkcstok-migrate reads and prints, which the planner
// (plan), the applier (apply), the command line and the schemas share: the request, the plan,
// the result, the inventory of info, the error codes, and the enumerations of their fields.
// It decides nothing and does no I/O; schema/*.json describe the same documents, and a test
// holds the two against each other (schema.TestSchemasMatchStructs).
package contract
