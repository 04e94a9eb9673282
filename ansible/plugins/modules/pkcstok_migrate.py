#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, ocktools contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pkcstok_migrate
short_description: Migrate an openCryptoki token repository to the 3.12 format
version_added: "0.1.0"
description:
  - Wraps the C(pkcstok-migrate) command line tool, which migrates an openCryptoki PKCS#11 token
    repository (Soft, ICA, CCA or EP11 token) to the 3.12 data store format and sets
    C(tokversion = 3.12) for the slot in C(opencryptoki.conf).
  - The tool first computes a read-only plan (C(pkcstok-migrate plan)). When the plan finds nothing
    to do (the token is already in the 3.12 format and the conf already says so), the module reports
    C(changed=false) and does not write anything.
  - Otherwise the module runs C(pkcstok-migrate apply), which makes backups
    (C(<datastore>_BAK) and C(<confdir>/opencryptoki.conf_BAK)), re-encrypts the objects, verifies
    the new repository and switches it in atomically.
  - With I(state=rolled_back) the module runs C(pkcstok-migrate rollback), which switches back to the
    backups made by an earlier migration.
  - With I(slots) the module migrates a whole host in one run, each slot with its own repository
    and PINs (a host with ICA, CCA, EP11 and Soft slots). It makes one plan of all the slots
    (C(pkcstok-migrate plan) with a host request), stops C(pkcsslotd) once, runs one
    C(pkcstok-migrate apply) of all the slots (all or nothing; the tool switches back the slots it
    already switched when a later slot fails), then checks every migrated slot with the library. A
    slot that fails its check is rolled back alone (C(pkcstok-migrate rollback) of that slot); the
    other slots stay migrated.
  - PINs are passed to the tool only as a JSON request on its standard input, never on its command
    line and never in a file written by the module. PIN files (I(so_pin_file), I(user_pin_file)) are
    read once, by the module, and their PINs go into that request; the tool never opens them.
options:
  slot:
    description:
      - Slot number of the token, as in C(opencryptoki.conf).
      - One of I(slot) and I(slots) is required; they are mutually exclusive.
    type: int
  slots:
    description:
      - Several slots of the host's C(opencryptoki.conf), migrated (or rolled back) in one run, each
        with its own repository and PINs.
      - Mutually exclusive with I(slot), I(datastore), I(so_pin), I(user_pin), I(so_pin_file) and
        I(user_pin_file), because each slot carries its own.
      - Every PIN file is read once, by the module, under the rules of I(so_pin_file); the PINs reach
        the tool only in the request on its standard input.
      - With I(state=migrated), pkcsslotd is stopped once for the host (I(stop_slot_daemon)), one
        C(pkcstok-migrate apply) migrates every slot that needs it, all or nothing (a slot with a
        wrong PIN fails the run before anything is changed and the error names that slot), and
        the daemon is started again. Then the host's library checks each migrated slot
        (I(verify_with_library)), with that slot's user PIN. The slots that fail their check are
        rolled back each alone, C(pkcstok-migrate rollback) of that slot, in one more stop of the
        daemon; the other slots stay migrated and the module fails with C(library_verify_failed).
      - With I(state=rolled_back), one C(pkcstok-migrate rollback) rolls back the slots listed
        (their PINs are not needed and not sent).
    type: list
    elements: dict
    suboptions:
      slot:
        description:
          - Slot number of the token, as in C(opencryptoki.conf). Each slot at most once.
        type: int
        required: true
      datastore:
        description:
          - Token repository directory of this slot; when not set, the slot's directory derived from
            C(opencryptoki.conf).
        type: path
      so_pin:
        description:
          - SO PIN of this slot's token. Mutually exclusive with I(so_pin_file). Never logged.
        type: str
      user_pin:
        description:
          - User PIN of this slot's token (also used by its library check). Mutually exclusive with
            I(user_pin_file). Never logged.
        type: str
      so_pin_file:
        description:
          - Path, on the managed host, of a file whose first line is this slot's SO PIN (the rules of
            the module's I(so_pin_file)).
        type: path
      user_pin_file:
        description:
          - Path, on the managed host, of a file whose first line is this slot's user PIN (the rules
            of the module's I(so_pin_file)).
        type: path
      verify_with_library:
        description:
          - Whether the host's library checks this slot after the migration; when not set, the
            module's I(verify_with_library).
          - Set C(false) for a slot whose token the host's library cannot open, for example a CCA or
            EP11 slot on a host without the CCA or EP11 host library (C(libcsulcca.so),
            C(libep11.so)) and its hardware, where its check would fail and roll the slot back.
        type: bool
  datastore:
    description:
      - Token repository directory (for example C(/var/lib/opencryptoki/swtok)).
      - When not set, the tool uses the slot's directory derived from C(opencryptoki.conf).
    type: path
  confdir:
    description:
      - Directory that holds C(opencryptoki.conf).
    type: path
    default: /etc/opencryptoki
  so_pin:
    description:
      - SO PIN of the token.
      - Mutually exclusive with I(so_pin_file).
      - Never logged; still use Ansible Vault or C(no_log) for the variable that holds it.
    type: str
  user_pin:
    description:
      - User PIN of the token.
      - Mutually exclusive with I(user_pin_file).
      - Never logged; still use Ansible Vault or C(no_log) for the variable that holds it.
    type: str
  so_pin_file:
    description:
      - Path, on the managed host, of a file whose first line is the SO PIN.
      - Read once, by the module, under the rules C(pkcstok-migrate) applies to its own PIN files; the
        file is refused (code C(bad_request), nothing changed) when it is a symlink, not a regular file
        (a FIFO is refused at once, never waited on), owned by anyone but root or the user the module
        runs as, has any permission bit for group or others (use mode C(0600)), or is larger than
        4096 bytes. The error names the file and the rule, never its content.
      - Mutually exclusive with I(so_pin).
    type: path
  user_pin_file:
    description:
      - Path, on the managed host, of a file whose first line is the user PIN.
      - Read once, by the module, under the same rules as I(so_pin_file); the library check of
        I(verify_with_library) uses the PIN read then.
      - Mutually exclusive with I(user_pin).
    type: path
  binary:
    description:
      - Path of the C(pkcstok-migrate) executable on the managed host.
      - When not set, C(pkcstok-migrate) is searched for in C(PATH) and the usual sbin directories.
    type: path
  state:
    description:
      - C(migrated) makes sure the token repository is in the 3.12 format.
      - C(rolled_back) switches back to the backups made by an earlier migration. When there is
        nothing to roll back, the module reports C(changed=false).
    type: str
    choices: [migrated, rolled_back]
    default: migrated
  stop_slot_daemon:
    description:
      - Stop C(pkcsslotd) before changing the repository and start it again afterwards, also when
        the migration fails.
      - Uses C(systemctl) when systemd is running, otherwise C(service).
      - The daemon is only stopped when a change is actually going to be made, and only started again
        when it was running before. Check mode never touches the daemon.
      - When C(false) and the daemon is running, the tool refuses to change the repository
        (error code C(slot_daemon_running)).
    type: bool
    default: false
  verify_with_library:
    description:
      - After a migration, once C(pkcsslotd) runs again, open the migrated token with the host's own
        openCryptoki (C(libopencryptoki.so) through Python's C(ctypes); C_Initialize, C_OpenSession,
        C_FindObjects without login for the public objects, C_Login with the user PIN and
        C_FindObjects again for the private ones) and compare what it sees with the plan's object
        counts.
      - When the library does not see every object of the plan (or cannot open the token), the
        module runs C(pkcstok-migrate rollback), starts C(pkcsslotd) again, opens the token once
        more (now in the old format) and fails with the code C(library_verify_failed).
      - Needs I(user_pin) or I(user_pin_file) and I(stop_slot_daemon=true) (the daemon must be
        running for the library to open the token; if it was not running before, it is started for
        the check and stopped again). The PIN stays in the module's memory and is never on a
        command line.
      - The library never runs as root. The check runs in a forked child that, before it loads the
        library, gives up root for good and becomes the user I(library_user) with the token's group
        (the slot's C(usergroup), else C(pkcs11)) as its group and only supplementary group
        (setgroups, setgid, setuid; it checks that real, effective and saved ids all changed and
        that C(setuid(0)) fails, and is not dumpable). Run as root, openCryptoki changes the mode and
        group of what it opens in the repository, so a hard link to a root-only file put there by a
        member of the token group would become readable and writable by the group; run as that user,
        the library cannot open such a file and the check fails (and the migration is rolled back).
      - The user and the group are looked up before anything changes; a user without a passwd entry
        (the library cannot initialise without one), a user or group that is root, or an unknown
        group fails the module first.
      - With I(slots), every migrated slot is checked (each with its own user PIN and its own
        token group) unless its entry sets I(verify_with_library=false); a slot that fails is
        rolled back alone.
    type: bool
    default: false
  remove_backups_after_verify:
    description:
      - An explicit opt-in, never needed to migrate another slot. Once I(verify_with_library) has
        seen every object of the plan in the migrated token, remove the backups of this migration
        (C(<datastore>_BAK), and C(<confdir>/opencryptoki.conf_BAK) when this run made it).
      - The module removes nothing itself. It runs C(pkcstok-migrate remove-backups) with the backup
        record of apply's result (the paths and the device and inode numbers apply made them with),
        and the tool removes an entry only while it still is that one; a directory a member of the
        token group renamed to C(<datastore>_BAK) is refused, not removed.
      - With I(slots), only when every checked slot passed, and only for the slots checked.
      - After that, C(state=rolled_back) has nothing to roll back to for this slot.
    type: bool
    default: false
  library_user:
    description:
      - The user that runs the host's library for I(verify_with_library), with the token's group (the
        slot's C(usergroup), else C(pkcs11)) as its only group. Must have a passwd entry and must not be
        root.
      - The default, C(pkcsslotd), is the user the openCryptoki packages of Debian, Ubuntu, RHEL and
        SUSE create for the slot daemon.
    type: str
    default: pkcsslotd
  library:
    description:
      - Path of the host's C(libopencryptoki.so) for I(verify_with_library).
      - When not set, C(/usr/lib/*/pkcs11/libopencryptoki.so), C(/usr/lib64/opencryptoki/libopencryptoki.so)
        and similar places are searched.
    type: path
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Check mode runs C(pkcstok-migrate plan) only (with I(slots), one plan of all the slots). With
        I(state=rolled_back) it reports what would be rolled back from the backups that exist, and
        never runs the rollback.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details:
      - Returns the change of C(opencryptoki.conf) (with I(slots), the one change of all the slots)
        and, for I(state=migrated), the format of every token object before and after.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
requirements:
  - C(pkcstok-migrate) installed on the managed host.
notes:
  - The tool must run as root (use C(become=true)); otherwise it fails with the error code C(not_root).
  - The SO PIN and the user PIN are both needed to migrate a token that has private objects.
  - I(so_pin) and I(user_pin) are marked C(no_log), so Ansible masks them in its output and logs; so are
    the PINs read from I(so_pin_file) and I(user_pin_file). Keep them in Ansible Vault, and set
    C(no_log=true) on tasks that handle them in other ways.
  - Error results carry a machine-readable C(code) (for example C(wrong_pin),
    C(slot_daemon_running), C(backup_exists)).
  - The backups are left in place after a successful migration; remove them once the new repository
    has been tested. C(opencryptoki.conf_BAK) is the conf from before the first migration, which the
    tool makes once and never overwrites, so migrating another slot later (or with I(slots), several
    at once) needs no backup removed.
author:
  - ocktools contributors (@ocktools)
'''

EXAMPLES = r'''
- name: Show what the migration of slot 3 would do
  ocktools.pkcstok.pkcstok_migrate:
    slot: 3
    so_pin: "{{ vault_so_pin }}"
    user_pin: "{{ vault_user_pin }}"
  check_mode: true
  diff: true
  become: true
  register: plan

- name: Migrate slot 3, stopping pkcsslotd for the run
  ocktools.pkcstok.pkcstok_migrate:
    slot: 3
    datastore: /var/lib/opencryptoki/swtok
    confdir: /etc/opencryptoki
    so_pin: "{{ vault_so_pin }}"
    user_pin: "{{ vault_user_pin }}"
    stop_slot_daemon: true
  become: true

- name: Migrate with PINs read from files on the managed host
  ocktools.pkcstok.pkcstok_migrate:
    slot: 3
    so_pin_file: /root/.ock/so_pin
    user_pin_file: /root/.ock/user_pin
    binary: /usr/local/sbin/pkcstok-migrate
  become: true

- name: Roll slot 3 back to the backups
  ocktools.pkcstok.pkcstok_migrate:
    slot: 3
    state: rolled_back
    stop_slot_daemon: true
  become: true

- name: Migrate a whole host in one run, each slot with its own PINs
  ocktools.pkcstok.pkcstok_migrate:
    slots:
      - slot: 3
        so_pin: "{{ vault_soft_so_pin }}"
        user_pin: "{{ vault_soft_user_pin }}"
      - slot: 1
        so_pin: "{{ vault_ica_so_pin }}"
        user_pin: "{{ vault_ica_user_pin }}"
      - slot: 2
        so_pin_file: /root/.ock/cca_so_pin
        user_pin_file: /root/.ock/cca_user_pin
    stop_slot_daemon: true
    verify_with_library: true
  become: true
  register: host

- name: Roll back slots 1 and 2 (no PINs needed)
  ocktools.pkcstok.pkcstok_migrate:
    slots:
      - slot: 1
      - slot: 2
    state: rolled_back
    stop_slot_daemon: true
  become: true
'''

RETURN = r'''
changed:
  description: Whether the repository or the conf was (or, in check mode, would be) changed.
  returned: always
  type: bool
  sample: true
plan:
  description:
    - The plan computed by C(pkcstok-migrate plan) (read-only), before any change was made.
    - Holds nothing derived from a PIN.
  returned: when I(state=migrated) and I(slot) is given
  type: dict
  contains:
    changed:
      description: Whether the plan has changes to make.
      type: bool
      returned: always
    slot:
      description: Slot number.
      type: int
      returned: always
    token_type:
      description: C(Soft), C(ICA), C(CCA) or C(EP11).
      type: str
      returned: always
    datastore:
      description: Absolute path of the token repository.
      type: str
      returned: always
    conf:
      description: Absolute path of C(opencryptoki.conf).
      type: str
      returned: always
    format:
      description: Current repository format, C(old), C(3.12) or C(mixed).
      type: str
      returned: always
    objects:
      description: One entry per token object (file, private, format, class, class_name, label, id, size, new_size, action).
      type: list
      elements: dict
      returned: always
    counts:
      description: Object counts (total, public, private, reencrypt, rewrap_header, none).
      type: dict
      returned: always
    key_files:
      description: What happens to NVTOK.DAT, MK_SO and MK_USER.
      type: list
      elements: dict
      returned: always
    conf_diff:
      description: Unified diff of C(opencryptoki.conf); empty when the conf stays as it is.
      type: str
      returned: always
    fingerprint:
      description: C(sha256:<hex>) over the repository and the conf as they were planned.
      type: str
      returned: always
    warnings:
      description: Warnings of the tool.
      type: list
      elements: str
      returned: always
    incomplete:
      description: What the plan could not look at (for example private objects when no PINs were given).
      type: list
      elements: str
      returned: always
    steps:
      description: The operations apply would carry out, in order.
      type: list
      elements: dict
      returned: always
  sample:
    changed: true
    slot: 3
    token_type: Soft
    datastore: /var/lib/opencryptoki/swtok
    conf: /etc/opencryptoki/opencryptoki.conf
    format: old
    counts: {total: 3, public: 1, private: 2, reencrypt: 2, rewrap_header: 1, none: 0}
result:
  description:
    - The result printed by C(pkcstok-migrate apply) or C(pkcstok-migrate rollback).
  returned: when apply or rollback of I(slot) ran (not in check mode)
  type: dict
  sample:
    changed: true
    operation: apply
    slot: 3
    token_type: Soft
    datastore: /var/lib/opencryptoki/swtok
    conf: /etc/opencryptoki/opencryptoki.conf
    backup: {datastore: /var/lib/opencryptoki/swtok_BAK, conf: /etc/opencryptoki/opencryptoki.conf_BAK}
    objects_migrated: 3
    objects_total: 3
    verified: true
host_plan:
  description:
    - With I(slots), the plan of the host computed by C(pkcstok-migrate plan) (read-only), before any
      change was made.
    - C(plans) holds one plan per slot (the fields of I(plan)); C(conf_diff) is the one change of
      C(opencryptoki.conf) for all the slots. Holds nothing derived from a PIN.
  returned: when I(state=migrated) and I(slots) is given
  type: dict
  contains:
    changed:
      description: Whether any slot has changes to make.
      type: bool
      returned: always
    conf:
      description: Absolute path of C(opencryptoki.conf).
      type: str
      returned: always
    conf_diff:
      description: Unified diff of C(opencryptoki.conf) once every slot's C(tokversion) is set.
      type: str
      returned: always
    plans:
      description: The plan of each slot, in the order of I(slots).
      type: list
      elements: dict
      returned: always
    warnings:
      description: Warnings of the tool.
      type: list
      elements: str
      returned: always
  sample:
    changed: true
    conf: /etc/opencryptoki/opencryptoki.conf
    conf_diff: "@@ -3,4 +3,5 @@ ..."
    plans: [{slot: 3, token_type: Soft, format: old}, {slot: 1, token_type: ICA, format: old}]
host_result:
  description:
    - With I(slots), what C(pkcstok-migrate apply) or C(pkcstok-migrate rollback) printed for the host
      (C(changed), C(operation), C(conf), C(conf_changed), C(conf_diff), C(slots) with each slot's
      C(outcome) and C(result), C(warnings)).
  returned: when I(slots) is given and apply or rollback ran (not in check mode)
  type: dict
  sample:
    changed: true
    operation: apply
    conf: /etc/opencryptoki/opencryptoki.conf
    conf_changed: true
    slots: [{slot: 3, outcome: migrated}, {slot: 1, outcome: migrated}]
slots:
  description:
    - With I(slots), what happened to each slot, in the order of I(slots), also when the module
      fails.
    - C(outcome) is C(migrated), C(unchanged), C(rolled_back) (rolled back by this run, after its
      library check failed or with I(state=rolled_back)), C(switched_back) (the tool switched it back
      because another slot failed during apply), C(failed), C(not_started), or in check mode
      C(would_migrate) or C(would_roll_back).
    - C(verified) is true when the host's library opened the migrated slot and saw every object of
      its plan; C(rolled_back) is true when this run rolled the slot back.
    - Also C(result) (the tool's result for the slot), C(error) (the tool's error for the slot),
      C(library_check) (as I(library_check), for this slot), C(rollback_result) and
      C(backups_removed), when they apply.
  returned: when I(slots) is given
  type: list
  elements: dict
  sample:
    - {slot: 3, outcome: migrated, verified: true, rolled_back: false}
    - {slot: 1, outcome: rolled_back, verified: false, rolled_back: true}
    - {slot: 2, outcome: migrated, verified: false, rolled_back: false}
backup_datastore:
  description:
    - Backup of the token repository (C(<datastore>_BAK)).
    - With I(state=rolled_back) in check mode, the backup that the rollback would switch back to.
  returned: when the tool made or found a backup, or in check mode with I(state=rolled_back) when it exists
  type: str
  sample: /var/lib/opencryptoki/swtok_BAK
backup_conf:
  description:
    - Backup of C(opencryptoki.conf) (C(<confdir>/opencryptoki.conf_BAK)).
    - With I(state=rolled_back) in check mode, the backup that the rollback would switch back to.
  returned: when the tool made or found a backup, or in check mode with I(state=rolled_back) when it exists
  type: str
  sample: /etc/opencryptoki/opencryptoki.conf_BAK
slot_daemon:
  description: What the module did with C(pkcsslotd).
  returned: when I(stop_slot_daemon=true) and not in check mode
  type: dict
  contains:
    was_running:
      description: Whether the daemon was running before the run.
      type: bool
    stopped:
      description: Whether the module stopped the daemon.
      type: bool
    started:
      description: Whether the module started the daemon again.
      type: bool
  sample: {was_running: true, stopped: true, started: true}
library_check:
  description:
    - With I(verify_with_library), what the host's own library saw after the migration
      (C(public), C(private), C(total), C(library)), what the plan expected (C(expected)), who ran
      the library (C(identity), as the check's child saw itself, with C(user), C(group), C(uid), C(euid),
      C(suid), C(gid), C(groups), C(dumpable)), and on a failed check also C(error), C(rolled_back)
      and C(after_rollback) (what the library saw in the old format again).
  returned: when I(verify_with_library=true) and apply ran
  type: dict
  sample:
    public: 2
    private: 3
    total: 5
    library: /usr/lib/s390x-linux-gnu/pkcs11/libopencryptoki.so
    expected: {public: 2, private: 3}
    identity: {user: pkcsslotd, group: pkcs11, uid: 101, euid: 101, suid: 101, gid: 105, groups: [105], dumpable: 0}
    ok: true
backups_removed:
  description: The backups C(pkcstok-migrate remove-backups) removed for I(remove_backups_after_verify).
  returned: when I(remove_backups_after_verify=true) and the check passed
  type: list
  elements: str
  sample: [/var/lib/opencryptoki/swtok_BAK, /etc/opencryptoki/opencryptoki.conf_BAK]
code:
  description:
    - Machine-readable error code of the tool, on failure.
    - One of C(wrong_pin), C(user_pin_not_set), C(slot_daemon_running), C(repository_in_use), C(locked),
      C(stale_plan), C(slot_not_found), C(unsupported_token), C(conf_invalid), C(corrupt_repository), C(byte_order),
      C(backup_exists), C(cannot_switch), C(bad_request), C(not_root), C(group_not_found), C(group_mismatch), C(io_error),
      C(verify_failed), C(no_space), C(read_only), C(interrupted), C(rewritten_by_library), C(internal),
      C(slot_daemon_control) when pkcsslotd could not be stopped or started, or
      C(library_verify_failed) when I(verify_with_library) found the migrated token wrong (it was rolled back).
  returned: failure
  type: str
  sample: wrong_pin
details:
  description: Code-specific details of the tool's error (file names, process ids, ...).
  returned: failure, when the tool gives them
  type: dict
  sample: {pids: [1234]}
rc:
  description: Exit status of the tool.
  returned: failure
  type: int
  sample: 1
msg:
  description: What happened, in plain words.
  returned: always
  type: str
  sample: "slot 3: migrated 3 of 3 objects"
diff:
  description:
    - In diff mode, a list with the change of C(opencryptoki.conf) (before/after text, headers set to
      the conf path) and, for I(state=migrated), the format of every object file before and after.
    - The object entry holds before/after dicts that map C(TOK_OBJ/<file>) (and the key files that
      change) to their format, for example C(old) before and C(3.12 (reencrypt)) after.
  returned: diff mode
  type: list
  elements: dict
'''

import ctypes
import errno
import grp
import json
import os
import pwd
import re
import signal
import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native, to_text

try:
    from ansible_collections.ocktools.pkcstok.plugins.module_utils import p11
    P11_IMPORT_ERROR = None
except ImportError:
    p11 = None
    P11_IMPORT_ERROR = traceback.format_exc()

try:
    from ansible_collections.ocktools.pkcstok.plugins.module_utils import pinfile
    PINFILE_IMPORT_ERROR = None
except ImportError:
    pinfile = None
    PINFILE_IMPORT_ERROR = traceback.format_exc()

CONF_NAME = 'opencryptoki.conf'
BAK_SUFFIX = '_BAK'

_HUNK_RE = re.compile(r'^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@')


class DiffError(Exception):
    pass


def apply_unified_diff(text, diff):
    """Apply a unified diff (one file, any number of hunks) to text and return the result.

    Strict: every context and removed line must match exactly at the position the hunk header
    names (no fuzz, no offset search), otherwise DiffError is raised.
    """
    if not diff:
        return text
    src = text.splitlines(True)
    lines = diff.splitlines(True)
    out = []
    pos = 0
    i = 0
    n = len(lines)
    # File headers before the first hunk.
    while i < n and not lines[i].startswith('@@'):
        if lines[i].startswith(('--- ', '+++ ', 'diff ', 'index ')) or lines[i].strip() == '':
            i += 1
            continue
        raise DiffError('unexpected line %d before the first hunk: %r' % (i + 1, lines[i]))
    if i >= n:
        raise DiffError('the diff holds no hunk')
    hunk_no = 0
    while i < n:
        m = _HUNK_RE.match(lines[i])
        if not m:
            if lines[i].strip() == '':
                i += 1
                continue
            raise DiffError('expected a hunk header at line %d, got %r' % (i + 1, lines[i]))
        hunk_no += 1
        old_start = int(m.group(1))
        old_len = int(m.group(2)) if m.group(2) is not None else 1
        new_len = int(m.group(4)) if m.group(4) is not None else 1
        i += 1
        old, new = [], []
        last = None
        while i < n and (len(old) < old_len or len(new) < new_len or lines[i].startswith('\\')):
            line = lines[i]
            i += 1
            if line.startswith('\\'):
                # "\ No newline at end of file" applies to the line just before it.
                if last in (' ', '-') and old:
                    old[-1] = old[-1].rstrip('\r\n')
                if last in (' ', '+') and new:
                    new[-1] = new[-1].rstrip('\r\n')
                continue
            tag, body = line[:1], line[1:]
            if tag in ('\n', '\r'):
                # an empty context line whose leading blank was dropped
                tag, body = ' ', line
            if tag == ' ':
                old.append(body)
                new.append(body)
            elif tag == '-':
                old.append(body)
            elif tag == '+':
                new.append(body)
            else:
                raise DiffError('hunk %d: unexpected line %r' % (hunk_no, line))
            last = tag
        if len(old) != old_len or len(new) != new_len:
            raise DiffError('hunk %d is truncated' % hunk_no)
        start = old_start - 1 if old_len > 0 else old_start
        if start < pos or start + old_len > len(src):
            raise DiffError('hunk %d is out of range' % hunk_no)
        if src[start:start + old_len] != old:
            raise DiffError('hunk %d does not match the current file' % hunk_no)
        out.extend(src[pos:start])
        out.extend(new)
        pos = start + old_len
    out.extend(src[pos:])
    return ''.join(out)


def read_text(path):
    with open(path, 'rb') as f:
        return to_text(f.read(), errors='surrogate_or_replace')


class Runner(object):
    def __init__(self, module, binary):
        self.module = module
        self.binary = binary

    def run(self, sub, request):
        """Run one subcommand. Returns (rc, doc, stderr); doc is None when stdout is not JSON."""
        args = [self.binary, sub, '--request', '-']
        rc, out, err = self.module.run_command(args, data=json.dumps(request), binary_data=True)
        doc = None
        try:
            doc = json.loads(out)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            doc = None
        return rc, doc, err, out

    @staticmethod
    def error_of(doc):
        if doc and isinstance(doc.get('error'), dict):
            return doc['error']
        return None


class SlotDaemon(object):
    """Stops pkcsslotd for the run and starts it again afterwards (only if it was running)."""

    def __init__(self, module):
        self.module = module
        self.was_running = False
        self.stopped = False
        self.started = False
        self.systemd = os.path.isdir('/run/systemd/system')
        self.tool = None

    def _cmd(self, action):
        m = self.module
        if self.systemd:
            tool = m.get_bin_path('systemctl')
            if tool:
                return [tool, action, 'pkcsslotd']
        tool = m.get_bin_path('service')
        if tool:
            return [tool, 'pkcsslotd', action]
        return None

    def status(self):
        return dict(was_running=self.was_running, stopped=self.stopped, started=self.started)

    def stop(self):
        """Returns None on success, else an error message."""
        cmd = self._cmd('status')
        if cmd is None:
            return ('cannot stop pkcsslotd: neither systemctl (with systemd running) nor service was found; '
                    'stop the slot daemon yourself or install one of them')
        if self.systemd and cmd[1] == 'status':
            cmd[1] = 'is-active'
        rc, dummy, dummy = self.module.run_command(cmd)
        self.was_running = rc == 0
        if not self.was_running:
            return None
        cmd = self._cmd('stop')
        rc, out, err = self.module.run_command(cmd)
        if rc != 0:
            return 'could not stop pkcsslotd (%s exited %d): %s' % (' '.join(cmd), rc, (err or out).strip())
        self.stopped = True
        return None

    def start(self):
        if not self.stopped:
            return None
        cmd = self._cmd('start')
        rc, out, err = self.module.run_command(cmd)
        if rc != 0:
            return 'could not start pkcsslotd again (%s exited %d): %s' % (' '.join(cmd), rc, (err or out).strip())
        self.started = True
        return None


def fail_from(module, sub, rc, doc, err, out, **extra):
    e = Runner.error_of(doc)
    if e is not None:
        kw = dict(extra)
        kw.update(code=e.get('code', 'internal'), rc=rc)
        if e.get('details'):
            kw['details'] = e['details']
        if e.get('field'):
            kw['field'] = e['field']
        if err:
            kw['stderr'] = err
        module.fail_json(msg=to_native(e.get('message') or ('pkcstok-migrate %s failed' % sub)), **kw)
    kw = dict(extra)
    module.fail_json(msg='pkcstok-migrate %s failed with exit status %d and printed no JSON result' % (sub, rc),
                     code='internal', rc=rc, stdout=out, stderr=err, **kw)


def object_diff(plan):
    before, after = {}, {}
    for o in plan.get('objects') or []:
        name = 'TOK_OBJ/%s' % o.get('file')
        fmt = o.get('format') or 'unknown'
        action = o.get('action') or 'none'
        before[name] = fmt
        after[name] = fmt if action == 'none' else '3.12 (%s)' % action
    for k in plan.get('key_files') or []:
        action = k.get('action') or 'none'
        if action == 'none':
            continue
        name = k.get('file')
        before[name] = 'missing' if action == 'create' else (plan.get('format') or 'unknown')
        after[name] = '3.12 (%s)' % action
    return dict(before_header='%s (objects)' % plan.get('datastore', 'datastore'),
                after_header='%s (objects)' % plan.get('datastore', 'datastore'),
                before=before, after=after)


def plan_diffs(module, doc, plans, warnings):
    """Diff mode's entries for a plan document doc (one slot's plan or a host plan): its conf
    diff, when there is one, then the objects of each slot's plan in plans."""
    diffs = []
    c = conf_diff_entry(module, doc, warnings)
    if c is not None:
        diffs.append(c)
    for pl in plans:
        diffs.append(object_diff(pl))
    return diffs


def conf_diff_entry(module, plan, warnings):
    conf = plan.get('conf') or os.path.join(module.params['confdir'], CONF_NAME)
    udiff = plan.get('conf_diff') or ''
    try:
        before = read_text(conf)
    except (IOError, OSError) as e:
        warnings.append('could not read %s for the diff: %s' % (conf, to_native(e)))
        return dict(prepared=udiff) if udiff else None
    try:
        after = apply_unified_diff(before, udiff)
    except DiffError as e:
        warnings.append('could not apply the conf diff of the plan to %s (%s); showing it as it is'
                        % (conf, to_native(e)))
        return dict(prepared=udiff)
    return dict(before_header=conf, after_header=conf, before=before, after=after)


def build_request(module, pins=None):
    """The JSON request for the tool. pins (from read_pins) go in as so_pin/user_pin values: the
    tool never opens a PIN file of the module's options."""
    p = module.params
    req = dict(slot=p['slot'], confdir=p['confdir'])
    if p['datastore']:
        req['datastore'] = p['datastore']
    for k, v in (pins or {}).items():
        req[k] = v
    return req


def read_pins(module):
    """The PINs of the options, each PIN file read once (module_utils/pinfile.py: no symlink, no
    FIFO, root's or the caller's, no group/other bits, at most 4 KiB, the first line). The values
    read are added to the module's no_log values. Returns {'so_pin': str, 'user_pin': str}, only
    the PINs given."""
    p = module.params
    pins = {}
    for k, what in (('so_pin', 'SO PIN'), ('user_pin', 'user PIN')):
        if p[k] is not None and p[k] != '':
            pins[k] = p[k]
        elif p[k + '_file']:
            if pinfile is None:
                module.fail_json(msg='%s_file needs the collection\'s module_utils pinfile: %s' % (k, PINFILE_IMPORT_ERROR),
                                 code='bad_request')
            try:
                pins[k] = pinfile.read_pin_file(p[k + '_file'], what=what)
            except pinfile.PinFileError as e:
                module.fail_json(msg=to_native(e), code='bad_request', field=k + '_file')
            module.no_log_values.add(pins[k])
    return pins


def backups_of(result):
    out = {}
    b = result.get('backup') or {}
    if b.get('datastore'):
        out['backup_datastore'] = b['datastore']
    if b.get('conf'):
        out['backup_conf'] = b['conf']
    return out


def run_with_daemon_stopped(module, runner, sub, request, ret, after=None):
    """Run a changing subcommand; stop/start pkcsslotd around it when asked. Fails the module on error.
    after(rc, doc) runs once the tool has finished, before the daemon is started again."""
    daemon = SlotDaemon(module) if module.params['stop_slot_daemon'] else None
    rc, doc, err, out = None, None, '', ''
    start_err = None
    try:
        if daemon is not None:
            stop_err = daemon.stop()
            ret['slot_daemon'] = daemon.status()
            if stop_err:
                module.fail_json(msg=stop_err, code='slot_daemon_control', **ret)
        rc, doc, err, out = runner.run(sub, request)
        if after is not None:
            after(rc, doc)
    finally:
        if daemon is not None:
            start_err = daemon.start()
            ret['slot_daemon'] = daemon.status()
    return rc, doc, err, out, start_err


def main():
    module = AnsibleModule(
        argument_spec=dict(
            slot=dict(type='int'),
            slots=dict(type='list', elements='dict', options=dict(
                slot=dict(type='int', required=True),
                datastore=dict(type='path'),
                so_pin=dict(type='str', no_log=True),
                user_pin=dict(type='str', no_log=True),
                so_pin_file=dict(type='path'),
                user_pin_file=dict(type='path'),
                verify_with_library=dict(type='bool'),
            ), mutually_exclusive=[('so_pin', 'so_pin_file'), ('user_pin', 'user_pin_file')]),
            datastore=dict(type='path'),
            confdir=dict(type='path', default='/etc/opencryptoki'),
            so_pin=dict(type='str', no_log=True),
            user_pin=dict(type='str', no_log=True),
            so_pin_file=dict(type='path'),
            user_pin_file=dict(type='path'),
            binary=dict(type='path'),
            state=dict(type='str', default='migrated', choices=['migrated', 'rolled_back']),
            stop_slot_daemon=dict(type='bool', default=False),
            verify_with_library=dict(type='bool', default=False),
            library=dict(type='path'),
            library_user=dict(type='str', default='pkcsslotd'),
            remove_backups_after_verify=dict(type='bool', default=False),
        ),
        mutually_exclusive=[('so_pin', 'so_pin_file'), ('user_pin', 'user_pin_file'), ('slot', 'slots'),
                            ('slots', 'datastore'), ('slots', 'so_pin'), ('slots', 'user_pin'),
                            ('slots', 'so_pin_file'), ('slots', 'user_pin_file')],
        required_one_of=[('slot', 'slots')],
        supports_check_mode=True,
    )
    module.run_command_environ_update = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C', LC_CTYPE='C')
    p = module.params

    if p['binary']:
        binary = p['binary']
        if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            module.fail_json(msg='binary %s does not exist or is not executable' % binary, code='bad_request')
    else:
        binary = module.get_bin_path('pkcstok-migrate', opt_dirs=['/usr/local/sbin', '/usr/sbin', '/sbin'])
        if not binary:
            module.fail_json(msg='pkcstok-migrate was not found in PATH; install it or set the binary option',
                             code='bad_request')
    runner = Runner(module, binary)
    if p['remove_backups_after_verify'] and not p['verify_with_library']:
        module.fail_json(msg='remove_backups_after_verify needs verify_with_library=true: backups are only '
                         'removed once the host\'s own library has opened the migrated token', code='bad_request')
    if p['slots'] is not None:
        entries = slot_entries(module)
        if p['state'] == 'migrated' and not module.check_mode:
            verifying = [e['slot'] for e in entries if e['verify']]
            if verifying and not p['stop_slot_daemon']:
                module.fail_json(msg='verify_with_library needs stop_slot_daemon=true (the library opens the tokens '
                                 'through pkcsslotd, and a rollback needs it stopped)', code='bad_request')
            for e in entries:
                if e['verify'] and (e['user_pin'] is None or e['user_pin'] == '') and not e['user_pin_file']:
                    module.fail_json(msg='verify_with_library needs user_pin or user_pin_file for slot %d' % e['slot'],
                                     code='bad_request', field='slots')
        if p['state'] == 'rolled_back':
            host_rollback(module, runner, entries)
        else:
            host_migrate(module, runner, entries)
        return

    if p['verify_with_library'] and p['state'] == 'migrated' and not module.check_mode:
        if not p['stop_slot_daemon']:
            module.fail_json(msg='verify_with_library needs stop_slot_daemon=true (the library opens the token '
                             'through pkcsslotd, and a rollback needs it stopped)', code='bad_request')
        if p['user_pin'] is None and not p['user_pin_file']:
            module.fail_json(msg='verify_with_library needs user_pin or user_pin_file', code='bad_request')

    if p['state'] == 'rolled_back':
        rollback(module, runner)
    else:
        migrate(module, runner)


def migrate(module, runner):
    warnings = []
    pins = read_pins(module)
    req = build_request(module, pins)
    ret = dict(changed=False)

    rc, plan, err, out = runner.run('plan', req)
    perr = Runner.error_of(plan)
    if rc not in (0, 2) or plan is None or perr is not None:
        fail_from(module, 'plan', rc, plan, err, out)
    changed = bool(plan.get('changed')) or rc == 2
    ret['plan'] = plan
    ret['changed'] = changed
    for w in plan.get('warnings') or []:
        warnings.append(to_text(w))

    if module._diff:
        ret['diff'] = plan_diffs(module, plan, [plan], warnings)

    if not changed:
        ret['msg'] = 'slot %s is already in the 3.12 format' % plan.get('slot', module.params['slot'])
        finish(module, ret, warnings)

    if module.check_mode:
        counts = plan.get('counts') or {}
        ret['msg'] = 'slot %s would be migrated (%s of %s objects to re-encrypt or rewrite)' % (
            plan.get('slot', module.params['slot']),
            counts.get('reencrypt', 0) + counts.get('rewrap_header', 0), counts.get('total', 0))
        finish(module, ret, warnings)

    ident = None
    if module.params['verify_with_library']:
        # Resolved before anything changes: a missing user or group fails here, not after apply.
        ident = library_identity(module, plan)
    rc, result, err, out, start_err = run_with_daemon_stopped(module, runner, 'apply', req, ret,
                                                              after=lambda rc, doc: test_canary(plan))
    if rc != 0 or result is None or Runner.error_of(result) is not None:
        if start_err:
            ret['slot_daemon_error'] = start_err
        ret.pop('changed', None)
        fail_from(module, 'apply', rc, result, err, out, **ret)
    ret['result'] = result
    ret['changed'] = bool(result.get('changed'))
    ret.update(backups_of(result))
    for w in result.get('warnings') or []:
        if w not in warnings:
            warnings.append(to_text(w))
    if start_err:
        ret['msg'] = 'migration finished but ' + start_err
        ret['code'] = 'slot_daemon_control'
        module.fail_json(**ret)
    ret['msg'] = 'slot %s: migrated %s of %s objects' % (
        result.get('slot'), result.get('objects_migrated', 0), result.get('objects_total', 0))
    if module.params['verify_with_library']:
        verify_with_library(module, runner, plan, ret, warnings, pins, ident)
        ret['msg'] += '; the host\'s library (run as %s) sees all %d objects' % (
            identity_text(ident), ret['library_check']['total'])
        if module.params['remove_backups_after_verify']:
            removed = remove_backups(module, runner, ret)
            ret['msg'] += '; backups removed (%s)' % (', '.join(removed) or 'none left to remove')
    finish(module, ret, warnings)


def remove_backups(module, runner, ret):
    """Has the tool remove the backups of the migration just verified. The module removes
    nothing by name: `pkcstok-migrate remove-backups` gets apply's result['backup'] unchanged
    (paths with the device and inode apply recorded) and removes only entries that still are
    those. No PIN is in that request."""
    backup = (ret.get('result') or {}).get('backup')
    if not backup:
        ret['backups_removed'] = []
        return []
    req = build_request(module)
    req['backup'] = backup
    removed = run_remove_backups(module, runner, req, ret, module.params['slot'])
    for key in ('backup_datastore', 'backup_conf'):
        if ret.get(key) in removed:
            ret.pop(key)
    ret['backups_removed'] = removed
    return removed


def run_remove_backups(module, runner, req, ret, slot):
    """Runs `pkcstok-migrate remove-backups` with req (a backup record, no PIN) and returns
    the paths it removed; fails the module, saying which slot, when the tool refused."""
    rc, doc, err, out = runner.run('remove-backups', req)
    e = Runner.error_of(doc)
    if rc != 0 or doc is None or e is not None:
        kw = dict(ret)
        kw.pop('msg', None)
        if e is not None:
            why = to_native(e.get('message') or 'refused')
            kw.update(code=e.get('code', 'internal'), rc=rc)
            if e.get('details'):
                kw['details'] = e['details']
        else:
            why = 'it exited %d and printed no JSON result' % rc
            kw.update(code='internal', rc=rc, stdout=out)
        if err:
            kw['stderr'] = err
        module.fail_json(msg='slot %s: migrated and verified, but pkcstok-migrate remove-backups did not remove '
                         'the backups: %s' % (slot, why), **kw)
    return [to_text(x) for x in doc.get('removed') or []]


CANARY_ENV = 'PKCSTOK_MIGRATE_TEST_CANARY'


def test_canary(plan):
    """Test-only hook of the fleet test (ansible/tests/fleet.sh): damages the migrated repository
    between apply and the library check, to show that the check rolls it back. It fires only
    when the environment names a file (PKCSTOK_MIGRATE_TEST_CANARY) that exists and whose first
    line is this repository's path; the file is removed when it fires, so it fires once.

    Without a second line it truncates a private object. A second line `hardlink NAME VICTIM
    USER` plays a member of the token group instead: a child that has become USER (its own uid,
    gid and groups) puts a hard link to VICTIM in place of the migrated repository's entry NAME
    (for example MK_USER), as such a member can where fs.protected_hardlinks is 0. What happened
    is written to <file>.fired."""
    marker = os.environ.get(CANARY_ENV)
    if not marker or not os.path.isfile(marker):
        return
    ds = plan.get('datastore') or ''
    try:
        with open(marker) as f:
            lines = f.read().splitlines()
        if not lines or lines[0].strip() != ds:
            return
        os.unlink(marker)
    except (IOError, OSError):
        return
    words = lines[1].split() if len(lines) > 1 else []
    if len(words) == 4 and words[0] == 'hardlink' and '/' not in words[1]:
        outcome = _canary_hardlink(os.path.join(ds, words[1]), words[2], words[3])
        with open(marker + '.fired', 'w') as f:
            f.write(outcome + '\n')
        return
    for o in plan.get('objects') or []:
        if o.get('private'):
            path = os.path.join(ds, 'TOK_OBJ', o.get('file'))
            with open(path, 'r+b') as f:
                f.truncate(max(os.path.getsize(path) // 2, 1))
            return


def _canary_hardlink(target, victim, user):
    """Test-only (test_canary): as user, replaces target by a hard link to victim."""
    pw = pwd.getpwnam(user)
    groups = os.getgrouplist(user, pw.pw_gid)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups(groups)
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            tmp = target + '.planted'
            os.link(victim, tmp)
            os.rename(tmp, target)
            code = 0
        except OSError as e:
            code = 10 + (e.errno or 0) % 100
        finally:
            os._exit(code)
    dummy, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return 'planted %s -> %s as %s (uid %d, groups %s)' % (target, victim, user, pw.pw_uid, groups)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    return 'not planted: %s' % (os.strerror(code - 10) if code >= 10 else 'wait status %d' % status)


def library_identity(module, plan):
    """Who runs the token library for the check: the user library_user (default pkcsslotd)
    with the token's group (the plan's usergroup, else pkcs11) as its group and only
    supplementary group. Fails the module (nothing changed yet) when the user has no passwd
    entry (the library cannot initialise without one), is root, or the group is unknown or root."""
    user = module.params['library_user']
    group = plan.get('usergroup') or 'pkcs11'
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        module.fail_json(msg='verify_with_library: library_user %s has no passwd entry on this host; the token '
                         'library is run as that user and cannot initialise without one (C_Initialize fails '
                         'with CKR_HOST_MEMORY). Set library_user to a user of this host that may use the token '
                         '(the pkcsslotd user of the openCryptoki package is the default)' % user, code='bad_request')
    if pw.pw_uid == 0:
        module.fail_json(msg='verify_with_library: library_user %s is uid 0; the token library is never run as root '
                         'on the files of the token group' % user, code='bad_request')
    try:
        gr = grp.getgrnam(group)
    except KeyError:
        module.fail_json(msg='verify_with_library: the token group %s does not exist on this host' % group,
                         code='group_not_found')
    if gr.gr_gid == 0:
        module.fail_json(msg='verify_with_library: the token group %s is gid 0; the token library is never run '
                         'with root\'s group' % group, code='bad_request')
    return dict(user=user, uid=pw.pw_uid, home=pw.pw_dir, group=group, gid=gr.gr_gid)


def identity_text(ident):
    return 'user %s (uid %d), group %s (gid %d)' % (ident['user'], ident['uid'], ident['group'], ident['gid'])


PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


def become(ident):
    """In the check's child, before the library is loaded: drops every privilege for good to
    ident (supplementary groups exactly [gid], then gid, then uid; real, effective and saved),
    makes the process non-dumpable and checks that all of it took: getresuid/getresgid,
    getgroups, and setuid(0) and setgid(0) failing. Returns what the process now is."""
    uid, gid = ident['uid'], ident['gid']
    libc = ctypes.CDLL(None, use_errno=True)
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or sorted(set(os.getgroups())) != [gid]:
        raise OSError('could not become %s: now uids %s, gids %s, groups %s'
                      % (identity_text(ident), os.getresuid(), os.getresgid(), os.getgroups()))
    for call in (os.setuid, os.setgid):
        try:
            call(0)
        except OSError as e:
            if e.errno != errno.EPERM:
                raise
        else:
            raise OSError('after becoming %s, %s(0) still succeeded' % (identity_text(ident), call.__name__))
    # The credential change has made the process non-dumpable already; say so explicitly
    # (the PIN is in this process's memory).
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    dumpable = libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    if dumpable != 0:
        raise OSError('after becoming %s the process is still dumpable (%d)' % (identity_text(ident), dumpable))
    os.chdir('/')
    os.environ['HOME'] = ident['home']
    os.environ['USER'] = os.environ['LOGNAME'] = ident['user']
    r = os.getresuid()
    return dict(user=ident['user'], group=ident['group'], uid=r[0], euid=r[1], suid=r[2],
                gid=os.getresgid()[0], groups=os.getgroups(), dumpable=dumpable)


def library_count(module, slot, user_pin, ident):
    """Counts the token's objects with the host's own library, in a child process (a crash or
    hang of the library cannot take the module with it) that has become ident (become()) before
    it loads the library: root never runs the token library on the group's files (as root the
    library chmods and chowns what it opens there). Returns (dict, None) or (None, error); the
    dict's 'identity' is what the child was when it ran the library."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            # The module's stdout is its JSON answer: nothing the library prints may reach it.
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            signal.alarm(600)
            try:
                who = become(ident)
            except OSError as e:
                raise OSError('the library check did not run: %s' % to_native(e))
            seen = p11.count_objects(module.params['library'], slot, user_pin)
            seen['identity'] = who
            out = dict(ok=seen)
        except Exception as e:  # everything is reported to the parent; nothing holds a PIN
            out = dict(error=to_native(e))
        os.write(wfd, json.dumps(out).encode('utf-8'))
        os._exit(0)
    os.close(wfd)
    chunks = []
    while True:
        b = os.read(rfd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(rfd)
    dummy, status = os.waitpid(pid, 0)
    try:
        doc = json.loads(b''.join(chunks).decode('utf-8'))
    except ValueError:
        return None, 'the library check ended without an answer (wait status %d)' % status
    if 'error' in doc:
        return None, doc['error']
    return doc['ok'], None


def verify_with_library(module, runner, plan, ret, warnings, pins, ident):
    """Opens the migrated token with the host's library, run as ident (library_identity); on a
    mismatch rolls back and fails."""
    slot = plan.get('slot', module.params['slot'])
    counts = plan.get('counts') or {}
    expected = dict(public=counts.get('public', 0), private=counts.get('private', 0))
    check = dict(expected=expected, ok=False)
    ret['library_check'] = check
    done_msg = ret.pop('msg', '')
    if p11 is None:
        module.fail_json(msg='verify_with_library needs the collection\'s module_utils p11: %s' % P11_IMPORT_ERROR,
                         code='bad_request', **ret)
    pin = pins.get('user_pin', '').encode('utf-8')
    if not pin:
        module.fail_json(msg='verify_with_library needs user_pin or user_pin_file', code='bad_request', **ret)
    daemon = SlotDaemon(module)
    started_for_check = False
    cmd = daemon._cmd('status') or ['false']
    if daemon.systemd and cmd[1] == 'status':
        cmd[1] = 'is-active'
    rc, dummy, dummy = module.run_command(cmd)
    if rc != 0:
        daemon.stopped = True  # let start() run it
        e = daemon.start()
        if e:
            module.fail_json(msg='verify_with_library: ' + e, code='slot_daemon_control', **ret)
        started_for_check = True
    check['identity'] = dict(user=ident['user'], uid=ident['uid'], group=ident['group'], gid=ident['gid'])
    seen, err = library_count(module, slot, pin, ident)
    if seen is not None:
        check.update(seen)
    if seen is not None and seen['public'] == expected['public'] and seen['private'] == expected['private']:
        check['ok'] = True
        if started_for_check:
            daemon.stop()
        ret['msg'] = done_msg
        return
    if err:
        check['error'] = err
        why = 'the host\'s library could not open it: %s' % err
    else:
        why = ('the host\'s library %s sees %d public and %d private objects, the plan has %d and %d'
               % (seen['library'], seen['public'], seen['private'], expected['public'], expected['private']))
    # Roll back: the daemon stopped for it and started again.
    req = build_request(module)
    rb = dict()
    rrc, rdoc, rerr, rout, start_err = run_with_daemon_stopped(module, runner, 'rollback', req, rb)
    check['rolled_back'] = rrc == 0 and rdoc is not None and Runner.error_of(rdoc) is None
    if not check['rolled_back']:
        e = Runner.error_of(rdoc) or {}
        ret.pop('changed', None)
        module.fail_json(msg='slot %s: migrated, but %s; the rollback FAILED too (%s): restore %s by hand'
                         % (slot, why, e.get('message') or rerr or 'no result', ret.get('backup_datastore', 'the _BAK copy')),
                         code='library_verify_failed', **ret)
    after, aerr = library_count(module, slot, pin, ident)
    check['after_rollback'] = after if after is not None else dict(error=aerr)
    if start_err:
        warnings.append(start_err)
    if started_for_check:
        daemon.stop()
    check['repository_rolled_back'] = rdoc.get('repository_changed') is not False
    if not check['repository_rolled_back']:
        rolled = ('the tool rolled back the conf only: it did not take the repository for the copy it migrated, '
                  'so it left the repository and %s as they are' % ret.get('backup_datastore', 'the _BAK copy'))
    else:
        rolled = 'it was rolled back'
    if after is not None:
        state = '%s and opens again in the old format (%d public, %d private objects)' % (
            rolled, after['public'], after['private'])
    else:
        state = '%s, but the library cannot open the old token either: %s' % (rolled, aerr)
    for w in warnings:
        module.warn(w)
    ret['changed'] = True
    module.fail_json(msg='slot %s: the migrated token failed the check with the host\'s own openCryptoki (run as %s): '
                     '%s; %s' % (slot, identity_text(ident), why, state), code='library_verify_failed', **ret)


def rollback(module, runner):
    p = module.params
    warnings = []
    ret = dict(changed=False)
    conf = os.path.join(p['confdir'], CONF_NAME)

    if module.check_mode:
        # The slot's directory and its tokversion from a read-only plan without PINs.
        datastore = p['datastore']
        rc, plan, err, out = runner.run('plan', build_request(module))
        if rc not in (0, 2) or plan is None or Runner.error_of(plan) is not None:
            if not datastore:
                fail_from(module, 'plan', rc, plan, err, out)
            warnings.append('could not plan slot %s (%s); judging from the backups alone'
                            % (p['slot'], to_native((Runner.error_of(plan) or {}).get('message') or 'no plan')))
            plan = {}
        datastore = datastore or plan.get('datastore')
        conf = plan.get('conf') or conf
        ds_bak = datastore.rstrip('/') + BAK_SUFFIX
        conf_bak = conf + BAK_SUFFIX
        if os.path.isdir(ds_bak):
            ret['backup_datastore'] = ds_bak
        # The rollback of this slot takes back only its own tokversion line, once its repository
        # is old again (opencryptoki.conf_BAK, the conf from before the first migration of any
        # slot, is kept for good and says what the line was).
        conf_todo = (os.path.isdir(ds_bak) or plan.get('format', 'old') == 'old') and \
            plan.get('conf_format', '3.12') == '3.12'
        if conf_todo and os.path.isfile(conf_bak):
            ret['backup_conf'] = conf_bak
        ret['changed'] = bool('backup_datastore' in ret or conf_todo)
        if ret['changed']:
            ret['msg'] = 'would roll back slot %s (%s)' % (p['slot'], ', '.join(
                v for v in (ret.get('backup_datastore'), 'its tokversion line' if conf_todo else None) if v))
        else:
            ret['msg'] = 'nothing to roll back: no %s and no tokversion of slot %s to take back' % (ds_bak, p['slot'])
        if module._diff and conf_todo:
            d = rollback_conf_preview(conf, [p['slot']], warnings)
            if d is not None:
                ret['diff'] = [d]
        finish(module, ret, warnings)

    before_conf = None
    if module._diff:
        try:
            before_conf = read_text(conf)
        except (IOError, OSError):
            before_conf = None

    # rollback needs no PIN, and the tool refuses a request that carries one.
    req = build_request(module)
    rc, result, err, out, start_err = run_with_daemon_stopped(module, runner, 'rollback', req, ret)
    e = Runner.error_of(result)
    if e is not None and e.get('code') == 'nothing_to_roll_back':
        ret['changed'] = False
        ret['msg'] = to_native(e.get('message') or 'nothing to roll back')
        if start_err:
            ret['msg'] += '; but ' + start_err
            ret['code'] = 'slot_daemon_control'
            module.fail_json(**ret)
        finish(module, ret, warnings)
    if rc != 0 or result is None or e is not None:
        if start_err:
            ret['slot_daemon_error'] = start_err
        ret.pop('changed', None)
        fail_from(module, 'rollback', rc, result, err, out, **ret)
    ret['result'] = result
    ret['changed'] = bool(result.get('changed'))
    ret.update(backups_of(result))
    for w in result.get('warnings') or []:
        warnings.append(to_text(w))
    if module._diff and ret['changed']:
        conf = result.get('conf') or conf
        try:
            after_conf = read_text(conf)
            ret['diff'] = [dict(before_header=conf, after_header=conf, before=before_conf or '', after=after_conf)]
        except (IOError, OSError) as ex:
            warnings.append('could not read %s for the diff: %s' % (conf, to_native(ex)))
    if start_err:
        ret['msg'] = 'rollback finished but ' + start_err
        ret['code'] = 'slot_daemon_control'
        module.fail_json(**ret)
    ret['msg'] = 'slot %s rolled back' % result.get('slot', p['slot'])
    finish(module, ret, warnings)


# ---- a host: several slots in one run (the option slots) ----------------------------------

def slot_entries(module):
    """The slots option, checked: each slot once, and whether the library checks it (its own
    verify_with_library, else the module's)."""
    p = module.params
    entries = []
    seen = set()
    if not p['slots']:
        module.fail_json(msg='slots must list at least one slot', code='bad_request', field='slots')
    for s in p['slots']:
        if s['slot'] in seen:
            module.fail_json(msg='slots: slot %d is listed twice' % s['slot'], code='bad_request', field='slots')
        seen.add(s['slot'])
        e = dict(s)
        e['verify'] = p['verify_with_library'] if s.get('verify_with_library') is None else s['verify_with_library']
        entries.append(e)
    return entries


def read_slot_pins(module, entries):
    """The PINs of every slot, each PIN file read once (read_pins' rules); every value read is
    added to the module's no_log values. Returns {slot: {'so_pin': str, 'user_pin': str}}."""
    out = {}
    for e in entries:
        pins = {}
        for k, what in (('so_pin', 'SO PIN'), ('user_pin', 'user PIN')):
            if e.get(k) is not None and e[k] != '':
                pins[k] = e[k]
                module.no_log_values.add(e[k])
            elif e.get(k + '_file'):
                if pinfile is None:
                    module.fail_json(msg='%s_file needs the collection\'s module_utils pinfile: %s' % (k, PINFILE_IMPORT_ERROR),
                                     code='bad_request')
                try:
                    pins[k] = pinfile.read_pin_file(e[k + '_file'], what='slot %d: %s' % (e['slot'], what))
                except pinfile.PinFileError as ex:
                    module.fail_json(msg=to_native(ex), code='bad_request', field='slots', slot=e['slot'])
                module.no_log_values.add(pins[k])
        out[e['slot']] = pins
    return out


def host_request(module, entries, pins=None):
    """The tool's host request: the confdir and every slot with its datastore and, when pins
    are given, its PINs as values (the tool never opens a PIN file of the module's options)."""
    slots = []
    for e in entries:
        s = dict(slot=e['slot'])
        if e.get('datastore'):
            s['datastore'] = e['datastore']
        for k, v in ((pins or {}).get(e['slot']) or {}).items():
            s[k] = v
        slots.append(s)
    return dict(confdir=module.params['confdir'], slots=slots)


def slot_request(module, entry):
    """The single-slot request for one slot of the host (rollback --slot N): no PIN."""
    req = dict(slot=entry['slot'], confdir=module.params['confdir'])
    if entry.get('datastore'):
        req['datastore'] = entry['datastore']
    return req


def slot_list(nums):
    nums = [str(n) for n in nums]
    if len(nums) < 2:
        return 'slot %s' % ''.join(nums)
    return 'slots %s and %s' % (', '.join(nums[:-1]), nums[-1])


def outcome_records(tool_slots):
    """The module's per-slot records from the tool's slot outcomes."""
    out = []
    for o in tool_slots or []:
        if not isinstance(o, dict):
            continue
        r = dict(slot=o.get('slot'), outcome=o.get('outcome'), verified=False, rolled_back=False)
        if o.get('result') is not None:
            r['result'] = o['result']
        if o.get('error') is not None:
            r['error'] = o['error']
        out.append(r)
    return out


def daemon_running(module, daemon):
    cmd = daemon._cmd('status') or ['false']
    if daemon.systemd and cmd[1] == 'status':
        cmd[1] = 'is-active'
    rc, dummy, dummy = module.run_command(cmd)
    return rc == 0


def host_migrate(module, runner, entries):
    """slots with state=migrated: one host plan; in check mode that is all. Otherwise one host
    apply with pkcsslotd stopped once, then the library check of every migrated slot that asks
    for it; a slot that fails its check is rolled back alone (rollback of that slot)."""
    p = module.params
    warnings = []
    pins = read_slot_pins(module, entries)
    req = host_request(module, entries, pins)
    ret = dict(changed=False)

    rc, hp, err, out = runner.run('plan', req)
    if rc not in (0, 2) or hp is None or Runner.error_of(hp) is not None:
        fail_from(module, 'plan', rc, hp, err, out)
    plans = dict((pl.get('slot'), pl) for pl in hp.get('plans') or [] if isinstance(pl, dict))
    missing = [e['slot'] for e in entries if e['slot'] not in plans]
    if missing:
        module.fail_json(msg='pkcstok-migrate plan printed no plan for %s' % slot_list(missing), code='internal',
                         host_plan=hp)
    changed = bool(hp.get('changed')) or rc == 2
    ret['host_plan'] = hp
    ret['changed'] = changed
    for w in list(hp.get('warnings') or []) + [w for e in entries for w in plans[e['slot']].get('warnings') or []]:
        if to_text(w) not in warnings:
            warnings.append(to_text(w))

    if module._diff:
        ret['diff'] = plan_diffs(module, hp, [plans[e['slot']] for e in entries], warnings)

    todo = [e['slot'] for e in entries if plans[e['slot']].get('changed')]
    if not changed:
        ret['slots'] = [dict(slot=e['slot'], outcome='unchanged', verified=False, rolled_back=False) for e in entries]
        ret['msg'] = '%s: already in the 3.12 format' % slot_list([e['slot'] for e in entries])
        finish(module, ret, warnings)

    if module.check_mode:
        ret['slots'] = [dict(slot=e['slot'], outcome='would_migrate' if plans[e['slot']].get('changed') else 'unchanged',
                             verified=False, rolled_back=False) for e in entries]
        ret['msg'] = '%s would be migrated in one run' % slot_list(todo)
        finish(module, ret, warnings)

    # Resolved before anything changes: a missing user or group fails here, not after apply.
    idents = {}
    for e in entries:
        if e['verify'] and plans[e['slot']].get('changed'):
            idents[e['slot']] = library_identity(module, plans[e['slot']])

    def canary(rc, doc):
        for e in entries:
            test_canary(plans[e['slot']])

    rc, hr, err, out, start_err = run_with_daemon_stopped(module, runner, 'apply', req, ret, after=canary)
    e = Runner.error_of(hr)
    if rc != 0 or hr is None or e is not None:
        fail_host(module, 'apply', rc, hr, e, err, out, start_err, ret)
    ret['host_result'] = hr
    records = outcome_records(hr.get('slots'))
    ret['changed'] = bool(hr.get('changed')) or bool(hr.get('conf_changed')) or \
        any(r['outcome'] == 'migrated' for r in records)
    by_slot = dict((r['slot'], r) for r in records)
    for e in entries:
        if e['slot'] not in by_slot:
            r = dict(slot=e['slot'], outcome='unchanged', verified=False, rolled_back=False)
            records.append(r)
            by_slot[e['slot']] = r
    ret['slots'] = records
    for w in hr.get('warnings') or []:
        if to_text(w) not in warnings:
            warnings.append(to_text(w))
    migrated = [r['slot'] for r in records if r['outcome'] == 'migrated']
    if start_err:
        ret['msg'] = 'migration of %s finished but %s' % (slot_list(migrated), start_err)
        ret['code'] = 'slot_daemon_control'
        module.fail_json(**ret)
    parts = []
    for r in records:
        res = r.get('result') or {}
        if r['outcome'] == 'migrated':
            parts.append('slot %s migrated (%s of %s objects)' % (r['slot'], res.get('objects_migrated', 0),
                                                                  res.get('objects_total', 0)))
        else:
            parts.append('slot %s %s' % (r['slot'], r['outcome']))
    ret['msg'] = '; '.join(parts)

    checked = [e for e in entries if e['verify'] and by_slot[e['slot']]['outcome'] == 'migrated']
    if checked:
        host_library_checks(module, runner, checked, plans, by_slot, idents, pins, ret, warnings)
    if p['remove_backups_after_verify']:
        host_remove_backups(module, runner, entries, by_slot, ret)
    finish(module, ret, warnings)


def host_library_checks(module, runner, checked, plans, by_slot, idents, pins, ret, warnings):
    """The library check of each slot in checked, once the host's apply is done and pkcsslotd
    runs again (started for the checks when it was not running, and stopped again after).
    The slots that fail are rolled back together, each alone (rollback of that slot), in one
    stop of pkcsslotd; the others stay migrated. Fails the module when any slot failed."""
    if p11 is None:
        module.fail_json(msg='verify_with_library needs the collection\'s module_utils p11: %s' % P11_IMPORT_ERROR,
                         code='bad_request', **ret)
    daemon = SlotDaemon(module)
    started_for_check = False
    if not daemon_running(module, daemon):
        daemon.stopped = True  # let start() run it
        e = daemon.start()
        if e:
            module.fail_json(msg='verify_with_library: ' + e, code='slot_daemon_control', **ret)
        started_for_check = True
    failed = []
    for e in checked:
        slot = e['slot']
        rec, plan, ident = by_slot[slot], plans[slot], idents[slot]
        counts = plan.get('counts') or {}
        expected = dict(public=counts.get('public', 0), private=counts.get('private', 0))
        check = dict(expected=expected, ok=False,
                     identity=dict(user=ident['user'], uid=ident['uid'], group=ident['group'], gid=ident['gid']))
        rec['library_check'] = check
        pin = (pins.get(slot) or {}).get('user_pin', '').encode('utf-8')
        seen, err = library_count(module, slot, pin, ident)
        if seen is not None:
            check.update(seen)
        if seen is not None and seen['public'] == expected['public'] and seen['private'] == expected['private']:
            check['ok'] = True
            rec['verified'] = True
            continue
        if err:
            check['error'] = err
            why = 'the host\'s library could not open it: %s' % err
        else:
            why = ('the host\'s library %s sees %d public and %d private objects, the plan has %d and %d'
                   % (seen['library'], seen['public'], seen['private'], expected['public'], expected['private']))
        failed.append((e, why))
    verified = [e['slot'] for e in checked if by_slot[e['slot']]['verified']]
    if verified:
        ident = idents[verified[0]]
        ret['msg'] += '; the host\'s library (run as %s) sees every object of %s' % (identity_text(ident),
                                                                                     slot_list(verified))
    if not failed:
        if started_for_check:
            daemon.stop()
        return
    # One stop of the daemon for the rollbacks of every failing slot, one start after them.
    rb_daemon = SlotDaemon(module)
    stop_err = rb_daemon.stop()
    rollback_errors = {}
    try:
        if stop_err:
            for e, why in failed:
                rollback_errors[e['slot']] = stop_err
        else:
            for e, why in failed:
                rrc, rdoc, rerr, rout = runner.run('rollback', slot_request(module, e))
                rec = by_slot[e['slot']]
                rb_error = Runner.error_of(rdoc)
                if rrc == 0 and rdoc is not None and rb_error is None:
                    rec['rolled_back'] = True
                    rec['outcome'] = 'rolled_back'
                    rec['rollback_result'] = rdoc
                else:
                    rollback_errors[e['slot']] = to_native((rb_error or {}).get('message') or rerr or 'no result')
    finally:
        start_err = rb_daemon.start()
    if start_err:
        warnings.append(start_err)
    states = []
    for e, why in failed:
        slot = e['slot']
        rec = by_slot[slot]
        check = rec['library_check']
        check['rolled_back'] = rec['rolled_back']
        if not rec['rolled_back']:
            states.append('slot %s: migrated, but %s; the rollback FAILED too (%s): restore %s by hand'
                          % (slot, why, rollback_errors.get(slot), plans[slot].get('backup') or 'the _BAK copy'))
            continue
        after, aerr = library_count(module, slot, (pins.get(slot) or {}).get('user_pin', '').encode('utf-8'),
                                    idents[slot])
        check['after_rollback'] = after if after is not None else dict(error=aerr)
        alone = ' alone' if len(by_slot) > 1 else ''
        if after is not None:
            state = 'it was rolled back%s and opens again in the old format (%d public, %d private objects)' % (
                alone, after['public'], after['private'])
        else:
            state = 'it was rolled back%s, but the library cannot open the old token either: %s' % (alone, aerr)
        states.append('slot %s failed the check with the host\'s own openCryptoki (run as %s): %s; %s'
                      % (slot, identity_text(idents[slot]), why, state))
    if started_for_check:
        daemon.stop()
    for w in warnings:
        module.warn(w)
    ret['changed'] = True
    kept = [r['slot'] for r in ret['slots'] if r['outcome'] == 'migrated']
    msg = '; '.join(states)
    if kept:
        msg += '; %s stay%s migrated' % (slot_list(kept), 's' if len(kept) == 1 else '')
        if verified:
            msg += ' (the library saw every object of %s)' % slot_list(verified)
    ret.pop('msg', None)
    module.fail_json(msg=msg, code='library_verify_failed', **ret)


def fail_host(module, op, rc, hr, e, err, out, start_err, ret):
    """Fails a host apply or rollback that the tool refused or that failed: what happened to
    each slot (the error's details) and any trouble restarting pkcsslotd go with it."""
    details = (e or {}).get('details')
    if isinstance(details, dict) and isinstance(details.get('slots'), list):
        ret['slots'] = outcome_records(details['slots'])
    if start_err:
        ret['slot_daemon_error'] = start_err
    ret.pop('changed', None)
    fail_from(module, op, rc, hr, err, out, **ret)


def host_remove_backups(module, runner, entries, by_slot, ret):
    """remove_backups_after_verify with slots: once every checked slot passed, the tool removes
    the backups of each verified slot (remove-backups with that slot's backup record of the
    host apply, unchanged but for the conf entry once it is gone). No PIN is in the request."""
    removed_all = []
    conf_done = False
    for e in entries:
        rec = by_slot[e['slot']]
        if not rec['verified']:
            continue
        backup = dict(((rec.get('result') or {}).get('backup')) or {})
        if conf_done:
            for k in ('conf', 'conf_dev', 'conf_ino'):
                backup.pop(k, None)
        if not backup:
            rec['backups_removed'] = []
            continue
        req = slot_request(module, e)
        req['backup'] = backup
        removed = run_remove_backups(module, runner, req, ret, e['slot'])
        if backup.get('conf') and (backup['conf'] in removed or not os.path.lexists(backup['conf'])):
            conf_done = True
        rec['backups_removed'] = removed
        removed_all.extend(removed)
    ret['backups_removed'] = removed_all
    ret['msg'] += '; backups removed (%s)' % (', '.join(removed_all) or 'none left to remove')


def host_rollback(module, runner, entries):
    """slots with state=rolled_back: one host rollback of those slots (no PIN in the request).
    Check mode plans the slots without PINs and reports the slots whose <datastore>_BAK exists,
    or whose repository is old under tokversion = 3.12 (the rollback takes the line back); its
    diff shows the conf without those slots' tokversion lines (the real run puts back an old
    value a line had before the migration, where there was one)."""
    p = module.params
    warnings = []
    ret = dict(changed=False)
    req = host_request(module, entries)
    if module.check_mode:
        rc, hp, err, out = runner.run('plan', req)
        if rc not in (0, 2) or hp is None or Runner.error_of(hp) is not None:
            fail_from(module, 'plan', rc, hp, err, out)
        plans = dict((pl.get('slot'), pl) for pl in hp.get('plans') or [] if isinstance(pl, dict))
        records = []
        for e in entries:
            pl = plans.get(e['slot']) or {}
            ds = pl.get('datastore') or e.get('datastore') or ''
            ds_bak = ds.rstrip('/') + BAK_SUFFIX if ds else ''
            repo_todo = bool(ds_bak) and os.path.isdir(ds_bak)
            would = repo_todo or pl.get('format') == 'old' and pl.get('conf_format') == '3.12'
            r = dict(slot=e['slot'], outcome='would_roll_back' if would else 'unchanged', verified=False,
                     rolled_back=False)
            if ds_bak and os.path.isdir(ds_bak):
                r['backup_datastore'] = ds_bak
            records.append(r)
        ret['slots'] = records
        todo = [r['slot'] for r in records if r['outcome'] == 'would_roll_back']
        ret['changed'] = bool(todo)
        ret['msg'] = ('%s would be rolled back' % slot_list(todo)) if todo else 'nothing to roll back'
        conf_slots = [e['slot'] for e in entries if (plans.get(e['slot']) or {}).get('conf_format') == '3.12'
                      and e['slot'] in todo]
        if module._diff and conf_slots:
            d = rollback_conf_preview(hp.get('conf') or os.path.join(p['confdir'], CONF_NAME), conf_slots, warnings)
            if d is not None:
                ret['diff'] = [d]
        finish(module, ret, warnings)

    conf = os.path.join(p['confdir'], CONF_NAME)
    before_conf = None
    if module._diff:
        try:
            before_conf = read_text(conf)
        except (IOError, OSError):
            before_conf = None
    rc, hr, err, out, start_err = run_with_daemon_stopped(module, runner, 'rollback', req, ret)
    e = Runner.error_of(hr)
    if e is not None and e.get('code') == 'nothing_to_roll_back':
        ret['changed'] = False
        ret['slots'] = [dict(slot=x['slot'], outcome='unchanged', verified=False, rolled_back=False) for x in entries]
        ret['msg'] = to_native(e.get('message') or 'nothing to roll back')
        if start_err:
            ret['msg'] += '; but ' + start_err
            ret['code'] = 'slot_daemon_control'
            module.fail_json(**ret)
        finish(module, ret, warnings)
    if rc != 0 or hr is None or e is not None:
        fail_host(module, 'rollback', rc, hr, e, err, out, start_err, ret)
    ret['host_result'] = hr
    records = outcome_records(hr.get('slots'))
    for r in records:
        r['rolled_back'] = r['outcome'] == 'rolled_back'
    ret['slots'] = records
    # changed from what happened to the slots and the conf, not only the host's flag (a host
    # rollback may report changed=false for slots it rolled back)
    ret['changed'] = bool(hr.get('changed')) or bool(hr.get('conf_changed')) or any(r['rolled_back'] for r in records)
    for w in hr.get('warnings') or []:
        warnings.append(to_text(w))
    if module._diff and ret['changed']:
        conf = hr.get('conf') or conf
        try:
            ret['diff'] = [dict(before_header=conf, after_header=conf, before=before_conf or '', after=read_text(conf))]
        except (IOError, OSError) as ex:
            warnings.append('could not read %s for the diff: %s' % (conf, to_native(ex)))
    if start_err:
        ret['msg'] = 'rollback finished but ' + start_err
        ret['code'] = 'slot_daemon_control'
        module.fail_json(**ret)
    done = [r['slot'] for r in records if r['rolled_back']]
    ret['msg'] = ('%s rolled back' % slot_list(done)) if done else 'nothing to roll back'
    finish(module, ret, warnings)


_SLOT_RE = re.compile(r'^\s*slot\s+(\d+)\s*(\{)?\s*(#.*)?$')


def without_tokversion(text, slots):
    """text of an opencryptoki.conf without the tokversion lines of the blocks of slots (what
    the rollback of those slots leaves), or None when a block cannot be found."""
    lines = text.splitlines(True)
    out = []
    want = set(slots)
    found = set()
    slot, depth = None, 0
    for line in lines:
        m = _SLOT_RE.match(line)
        if slot is None and depth == 0 and m:
            slot = int(m.group(1))
            depth = 1 if m.group(2) else 0
            out.append(line)
            continue
        if slot is not None:
            code = line.split('#', 1)[0]
            depth += code.count('{') - code.count('}')
            if slot in want and depth == 1 and code.split('=', 1)[0].strip() == 'tokversion':
                found.add(slot)
                continue
            if depth <= 0 and '}' in code:
                slot, depth = None, 0
        out.append(line)
    if found != want:
        return None
    return ''.join(out)


def rollback_conf_preview(conf, slots, warnings):
    """The diff entry of a rollback of slots in check mode: the conf without their tokversion."""
    try:
        before = read_text(conf)
    except (IOError, OSError) as e:
        warnings.append('could not read %s for the diff: %s' % (conf, to_native(e)))
        return None
    after = without_tokversion(before, slots)
    if after is None:
        warnings.append('could not find the tokversion lines of %s in %s for the diff' % (slot_list(slots), conf))
        return None
    return dict(before_header=conf, after_header=conf, before=before, after=after)


def finish(module, ret, warnings):
    for w in warnings:
        module.warn(w)
    module.exit_json(**ret)


if __name__ == '__main__':
    main()
