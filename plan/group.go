package plan

import (
	"fmt"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// planGroup fills p.Group: the token group by name in this host's group database and the
// group the repository's directory has now (doc/format.md §1.4).
//
// The token library checks that the repository's directory belongs to the group its own
// group database gives the name. Run from the host on a chroot's or container's repository,
// the host's database may give the name another gid than the repository's system does; set
// by the host's name, the migrated token would be refused by its own library. So when the
// directory's group is neither the name's gid here nor root's (a repository an
// administrator left in group root is given the token group, as upstream's set_perm does),
// the plan says so and apply refuses with group_mismatch.
func planGroup(p *contract.Plan, dir *repofs.Dir) error {
	st, err := dir.Lstat(".")
	if err != nil {
		return repoError(p.Datastore, err)
	}
	g := &contract.Group{Name: p.UserGroup, RepositoryGID: st.GID}
	if gid, err := repofs.LookupGroup(p.UserGroup); err == nil {
		g.GID = &gid
	}
	p.Group = g
	if err := GroupError(p); err != nil {
		p.Warnings = append(p.Warnings, err.Error()+": apply will refuse")
	}
	return nil
}

// GroupError is apply's refusal of a repository whose group disagrees with the token group's
// gid on this host (group_mismatch, planGroup), nil when it agrees, the repository is in
// group root, or nothing is to be migrated. A name unknown here is group_not_found, which
// apply reports itself.
func GroupError(p *contract.Plan) error {
	g := p.Group
	if g == nil || g.GID == nil || g.RepositoryGID == *g.GID || g.RepositoryGID == 0 || p.Format == contract.Format312 {
		return nil
	}
	return &contract.Error{Code: contract.CodeGroupMismatch, Message: fmt.Sprintf(
		"the repository %s belongs to gid %d, but the token group %q is gid %d on this host: its files would get gid %d, which the token library of the repository's own system (a chroot or container?) would refuse; run the tool where %q names gid %d, or change the repository's group to gid %d first",
		p.Datastore, g.RepositoryGID, g.Name, *g.GID, *g.GID, g.Name, g.RepositoryGID, *g.GID)}
}
