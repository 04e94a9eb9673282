#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, ocktools contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pkcstok_info
short_description: Report the openCryptoki token repositories of a host and whether they need migrating
version_added: "0.1.0"
description:
  - Runs C(pkcstok-migrate info), which reads C(opencryptoki.conf) and, for every slot, the token
    repository the token library uses, and reports the token type, the repository's format
    (C(old), C(3.12), C(mixed), C(missing) or C(unreadable) with the reason), its byte order, the
    number of objects, the slot's C(tokversion), which backups, journals and working copies exist,
    and whether the slot needs migrating.
  - Needs no PINs and never changes anything on the host; the audit to run before and after a
    rollout with M(ocktools.pkcstok.pkcstok_migrate).
options:
  confdir:
    description:
      - Directory that holds C(opencryptoki.conf).
    type: path
    default: /etc/opencryptoki
  state_dir:
    description:
      - Directory under which the token library keeps the slots' repositories (its C(CONFIG_PATH)).
    type: path
    default: /var/lib/opencryptoki
  binary:
    description:
      - Path of the C(pkcstok-migrate) executable on the managed host.
      - When not set, C(pkcstok-migrate) is searched for in C(PATH) and the usual sbin directories
        (where the role C(ocktools.pkcstok.install) puts it).
    type: path
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - The module never changes anything, in check mode or not.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
requirements:
  - C(pkcstok-migrate) installed on the managed host (for example with the role C(ocktools.pkcstok.install)).
notes:
  - The repositories are readable by root and the token group only; run it with C(become=true) to
    see their format rather than C(unreadable).
  - The module fails only when C(opencryptoki.conf) cannot be read; everything about a slot is in
    its entry of I(info.slots).
seealso:
  - module: ocktools.pkcstok.pkcstok_migrate
author:
  - ocktools contributors (@ocktools)
'''

EXAMPLES = r'''
- name: What do the tokens of this host look like?
  ocktools.pkcstok.pkcstok_info:
  become: true
  register: tokens

- name: Show the slots that still need migrating
  ansible.builtin.debug:
    msg: "{{ tokens.info.slots | selectattr('needs_migration') | map(attribute='slot') | list }}"

- name: A conf and repositories somewhere else, with the binary the install role put in place
  ocktools.pkcstok.pkcstok_info:
    confdir: /srv/ock/etc
    state_dir: /srv/ock/lib
    binary: /usr/local/sbin/pkcstok-migrate
  become: true
'''

RETURN = r'''
changed:
  description: Always C(false), the module changes nothing.
  returned: always
  type: bool
  sample: false
needs_migration:
  description: Whether at least one slot needs migrating.
  returned: success
  type: bool
  sample: true
slots_needing_migration:
  description: The numbers of the slots that need migrating.
  returned: success
  type: list
  elements: int
  sample: [3]
fips_mode:
  description:
    - The host's FIPS mode from C(/proc/sys/crypto/fips_enabled) (C(true), C(false)), or C(null) when it
      could not be read.
    - Under a FIPS OpenSSL upstream's C(pkcstok_migrate) cannot migrate old-format tokens (measured
      with Debian's FIPS provider; reported for RHEL 9 in upstream issue 527, which says to migrate
      before enabling FIPS). This tool migrates them either way.
  returned: success
  type: bool
  sample: false
broken_now:
  description:
    - The host runs in FIPS mode (kernel flag) and has old-format (or mixed) slots, which upstream's
      C(pkcstok_migrate) cannot migrate now (openCryptoki 3.27 on Debian still opens them;
      upstream issue 527 reports failures on RHEL 9). C(pkcstok-migrate) migrates them all the
      same (plan and apply do not depend on FIPS).
  returned: success
  type: bool
  sample: false
info:
  description:
    - The document printed by C(pkcstok-migrate info) (its JSON Schema is C(pkcstok-migrate schema info)).
    - Holds nothing derived from a PIN.
  returned: success
  type: dict
  contains:
    conf:
      description: Absolute path of C(opencryptoki.conf).
      type: str
      returned: always
    state_dir:
      description: Directory of the slots' repositories.
      type: str
      returned: always
    conf_backup:
      description: Whether C(opencryptoki.conf_BAK) exists.
      type: bool
      returned: always
    needs_migration:
      description: Whether at least one slot needs migrating.
      type: bool
      returned: always
    fips:
      description: C(file) read, C(enabled) (bool or null), C(reason) when null, C(old_format_broken).
      type: dict
      returned: always
    slots:
      description:
        - One entry per slot of the conf, in file order, with C(slot), C(stdll), C(token_type)
          (C(Soft), C(ICA), C(CCA), C(EP11) or C(unsupported)), C(datastore), C(format) (C(old),
          C(3.12), C(mixed), C(missing), C(unreadable), or empty for an unsupported token),
          C(reason), C(byte_order) (C(big-endian), C(little-endian), C(any)), C(objects),
          C(tokversion), C(label), C(files) (C(backup), C(rolled_back), C(journal), C(working_copy),
          C(conf_backup)), C(needs_migration) and C(warnings).
      type: list
      elements: dict
      returned: always
    warnings:
      description: Slots of the conf that could not be listed, and why.
      type: list
      elements: str
      returned: always
  sample:
    conf: /etc/opencryptoki/opencryptoki.conf
    state_dir: /var/lib/opencryptoki
    conf_backup: false
    needs_migration: true
    slots:
      - slot: 3
        stdll: libpkcs11_sw.so
        token_type: Soft
        datastore: /var/lib/opencryptoki/swtok
        format: old
        byte_order: little-endian
        objects: 3
        tokversion: absent
        label: my token
        files: {backup: false, rolled_back: false, journal: false, working_copy: false, conf_backup: false}
        needs_migration: true
        warnings: []
    warnings: []
code:
  description: Machine-readable error code of the tool on failure (for example C(conf_invalid)).
  returned: failure
  type: str
  sample: conf_invalid
msg:
  description: What happened, in plain words.
  returned: always
  type: str
  sample: "1 of 5 slots need migrating: 3"
'''

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native


def find_binary(module):
    binary = module.params['binary']
    if binary:
        if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            module.fail_json(msg='binary %s does not exist or is not executable' % binary, code='bad_request')
        return binary
    binary = module.get_bin_path('pkcstok-migrate', opt_dirs=['/usr/local/sbin', '/usr/sbin', '/sbin'])
    if not binary:
        module.fail_json(msg='pkcstok-migrate was not found in PATH; install it (role ocktools.pkcstok.install) '
                             'or set the binary option', code='bad_request')
    return binary


def main():
    module = AnsibleModule(
        argument_spec=dict(
            confdir=dict(type='path', default='/etc/opencryptoki'),
            state_dir=dict(type='path', default='/var/lib/opencryptoki'),
            binary=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    module.run_command_environ_update = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C', LC_CTYPE='C')
    p = module.params
    binary = find_binary(module)

    args = [binary, 'info', '--confdir', p['confdir'], '--state-dir', p['state_dir']]
    rc, out, err = module.run_command(args)
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        module.fail_json(msg='pkcstok-migrate info exited %d and printed no JSON document' % rc,
                         code='internal', rc=rc, stdout=out, stderr=err)
    e = doc.get('error')
    if rc != 0 or isinstance(e, dict):
        e = e if isinstance(e, dict) else {}
        module.fail_json(msg=to_native(e.get('message') or 'pkcstok-migrate info failed'),
                         code=e.get('code', 'internal'), rc=rc, stderr=err)

    for w in doc.get('warnings') or []:
        module.warn(to_native(w))
    slots = doc.get('slots') or []
    need = [s.get('slot') for s in slots if s.get('needs_migration')]
    if need:
        msg = '%d of %d slots need migrating: %s' % (len(need), len(slots), ', '.join(str(n) for n in need))
    else:
        msg = 'no slot of %d needs migrating' % len(slots)
    fips = doc.get('fips') or {}
    broken = bool(fips.get('old_format_broken'))
    if fips.get('enabled'):
        msg += '; FIPS mode is on' + (": upstream's pkcstok_migrate cannot migrate the old-format slots now, migrate them with pkcstok-migrate" if broken else '')
    module.exit_json(changed=False, info=doc, needs_migration=bool(doc.get('needs_migration')),
                     slots_needing_migration=need, fips_mode=fips.get('enabled'), broken_now=broken,
                     msg=msg)


if __name__ == '__main__':
    main()
