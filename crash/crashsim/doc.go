// Package crashsim turns a system-call trace of a real process into the file-system states a
// power cut could leave behind.
//
// Three parts:
//
//   - ParseTrace reads the output of `strace -f -y -xx -o FILE` (threads interleaved,
//     `<unfinished ...>` / `<... resumed>` pairs joined, every string and every -y path in
//     hexadecimal) into completed Calls.
//   - Replay follows the calls on a model of the directory tree below one root: a table of
//     file descriptors and open file descriptions (offsets, dups), and inodes whose file
//     content, metadata (mode, owner) and directory entries each have a volatile and a
//     durable version. It turns the calls that change the tree or make it durable into Ops.
//   - Sim.State builds the tree a power cut after the first k Ops could leave: Strict keeps
//     only what a barrier covered (fsync/fdatasync of a file: its content; fsync of a
//     directory: its entries; syncfs or sync: everything), Lenient keeps everything, and a
//     seeded Mix keeps, for each file's content, each file's metadata and each directory's
//     entries independently, a random prefix of what was not yet durable.
//
// Snapshot reads a real tree into a Tree and Materialize writes a Tree out again, so a crash
// state can be "rebooted into" with the real program.
//
// What the model leaves out (see crash/README.md): torn writes inside one write call,
// reordering of the operations on one file or one directory, renames between two
// directories (refused), and the creation of the root's own entry. Calls the model does not
// know that would change the tree below the root are refused, never ignored.
package crashsim
