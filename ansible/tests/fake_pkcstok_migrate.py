# Fake pkcstok-migrate for developing and testing the Ansible module without the Go binary.
# Speaks the JSON contract of DESIGN.md and contract/ (plan/apply/rollback/remove-backups
# --request -) with a simplified model: a slot counts as migrated when its conf block holds
# "tokversion = 3.12"; apply makes <datastore>_BAK, keeps the conf as it was before the first
# migration in opencryptoki.conf_BAK (made once, never overwritten, never required to be
# absent), edits the conf, drops a marker file into the datastore and reports the backups with
# their device and inode numbers; remove-backups removes a backup only while its device and
# inode are still the reported ones (all or nothing). rollback of a slot puts <datastore>_BAK
# back and removes only that slot's tokversion line (once its repository is old).
#
# A host request ("slots": several slots, each with its own PINs) is planned as one HostPlan
# (one conf diff for all slots) and applied all-or-nothing as one HostResult: every slot's PINs
# are checked first (wrong_pin names the slot, nothing changed); a slot that fails after that
# (FAKE_FAIL_SLOT=N) makes the run switch back the slots it already switched and restore the
# conf, and the error's details carry the slot and every slot's outcome.
#
# PINs: FAKE_SO_PIN / FAKE_USER_PIN (default sopin123 / user1234); FAKE_SO_PIN_<slot> /
# FAKE_USER_PIN_<slot> for one slot.
import difflib
import json
import os
import shutil
import sys

KNOWN = {'slot', 'datastore', 'confdir', 'so_pin', 'user_pin', 'so_pin_file', 'user_pin_file',
         'plan_file', 'all_slots', 'slots'}
KNOWN_SLOT = {'slot', 'datastore', 'so_pin', 'user_pin', 'so_pin_file', 'user_pin_file'}
KNOWN_REMOVE = {'slot', 'datastore', 'confdir', 'state_dir', 'backup'}
TOKVERSION = '    tokversion = 3.12\n'


class Fail(Exception):
    def __init__(self, code, message, **details):
        Exception.__init__(self, message)
        self.code, self.message, self.details = code, message, details


def die(code, message, **details):
    err = {'code': code, 'message': message}
    if details:
        err['details'] = details
    print(json.dumps({'error': err}))
    sys.exit(1)


def pin(req, name):
    if req.get(name) is not None:
        return req[name]
    f = req.get(name + '_file')
    if f:
        try:
            with open(f) as fh:
                return fh.read().rstrip('\n')
        except OSError as e:
            raise Fail('io_error', 'cannot read %s: %s' % (f, e.strerror))
    return None


def want_pin(kind, slot):
    return os.environ.get('FAKE_%s_PIN_%d' % (kind, slot)) or os.environ.get('FAKE_%s_PIN' % kind) or \
        ('sopin123' if kind == 'SO' else 'user1234')


def slot_block(lines, slot):
    start = None
    for i, l in enumerate(lines):
        if l.split() == ['slot', str(slot)]:
            start = i
        elif start is not None and l.strip() == '}':
            return start, i
    raise Fail('slot_not_found', 'slot %d is not defined in the conf' % slot)


def is_tokversion(line):
    return line.split('#')[0].split() == ['tokversion', '=', '3.12']


def slot_migrated(lines, slot):
    start, end = slot_block(lines, slot)
    return any(is_tokversion(l) for l in lines[start:end])


def with_tokversion(lines, slots):
    """lines with a tokversion line added to every slot of slots that lacks one."""
    out = list(lines)
    for s in slots:
        start, end = slot_block(out, s)
        if not any(is_tokversion(l) for l in out[start:end]):
            out.insert(end, TOKVERSION)
    return out


def without_tokversion(lines, slot):
    start, end = slot_block(lines, slot)
    return lines[:start] + [l for l in lines[start:end] if not is_tokversion(l)] + lines[end:]


def udiff(a, b):
    return ''.join(difflib.unified_diff(a, b, 'opencryptoki.conf', 'opencryptoki.conf', n=3))


class Conf(object):
    def __init__(self, confdir):
        self.confdir = os.path.abspath(confdir or '/etc/opencryptoki')
        self.path = os.path.join(self.confdir, 'opencryptoki.conf')
        try:
            with open(self.path) as f:
                self.lines = f.read().splitlines(True)
        except OSError as e:
            raise Fail('conf_invalid', 'cannot read %s: %s' % (self.path, e.strerror))

    def write(self, lines):
        with open(self.path, 'w') as f:
            f.write(''.join(lines))
        self.lines = lines

    def keep_pristine(self):
        """opencryptoki.conf_BAK: the conf before the first migration, made once."""
        bak = self.path + '_BAK'
        if os.path.lexists(bak):
            return bak, None
        shutil.copy2(self.path, bak)
        return bak, os.lstat(bak)


def slot_plan(conf, sreq):
    slot = sreq['slot']
    datastore = os.path.abspath(sreq.get('datastore') or '/var/lib/opencryptoki/swtok')
    migrated = slot_migrated(conf.lines, slot)
    so, user = pin(sreq, 'so_pin'), pin(sreq, 'user_pin')
    if so is not None and so != want_pin('SO', slot):
        raise Fail('wrong_pin', 'slot %d: the SO PIN is incorrect' % slot, slot=slot)
    if user is not None and user != want_pin('USER', slot):
        raise Fail('wrong_pin', 'slot %d: the user PIN is incorrect' % slot, slot=slot)
    try:
        with open(os.path.join(datastore, 'TOK_OBJ', 'OBJ.IDX')) as f:
            names = [n for n in f.read().split('\n') if n]
    except OSError as e:
        raise Fail('corrupt_repository', 'slot %d: cannot read OBJ.IDX: %s' % (slot, e.strerror), slot=slot)
    objects = []
    for n in names:
        size = os.path.getsize(os.path.join(datastore, 'TOK_OBJ', n))
        objects.append({'file': n, 'private': True, 'format': '3.12' if migrated else 'old',
                        'class': None, 'label': '', 'id': '', 'size': size,
                        'action': 'none' if migrated else 'reencrypt'})
    return {
        'format_version': 1, 'tool_version': 'fake', 'changed': not migrated, 'slot': slot,
        'token_type': 'Soft', 'stdll': 'libpkcs11_sw.so', 'usergroup': 'pkcs11',
        'datastore': datastore, 'confdir': conf.confdir, 'conf': conf.path,
        'format': '3.12' if migrated else 'old', 'conf_format': '3.12' if migrated else 'absent',
        'pins_checked': so is not None and user is not None, 'token': {}, 'objects': objects,
        'counts': {'total': len(objects), 'public': 0, 'private': len(objects),
                   'reencrypt': 0 if migrated else len(objects), 'rewrap_header': 0,
                   'none': len(objects) if migrated else 0},
        'key_files': [{'file': f, 'action': 'none' if migrated else 'rewrite'}
                      for f in ('NVTOK.DAT', 'MK_SO', 'MK_USER')],
        'conf_diff': udiff(conf.lines, with_tokversion(conf.lines, [slot])),
        'fingerprint': 'sha256:0', 'warnings': [], 'incomplete': [], 'steps': [],
        '_pins': (so, user)}


def public(plan):
    return dict((k, v) for k, v in plan.items() if not k.startswith('_'))


def result(op, plan, **kw):
    r = {'changed': False, 'operation': op, 'slot': plan['slot'], 'token_type': 'Soft',
         'datastore': plan['datastore'], 'conf': plan['conf'], 'objects_migrated': 0,
         'objects_total': len(plan['objects']), 'repository_changed': False, 'conf_changed': False,
         'conf_diff': '', 'verified': True, 'fingerprint': 'sha256:0', 'warnings': [], 'steps': []}
    r.update(kw)
    return r


def copy_tree(src, dst):
    """A copy with the modes, owners and groups of src (as the tool's backup keeps them)."""
    shutil.copytree(src, dst, symlinks=True)
    for root, dirs, files in os.walk(src):
        for n in [''] + dirs + files:
            s = os.path.join(root, n) if n else root
            st = os.lstat(s)
            os.lchown(os.path.join(dst, os.path.relpath(s, src)), st.st_uid, st.st_gid)


def switch_repository(plan):
    """Makes <datastore>_BAK and marks the datastore migrated; returns the backup record."""
    ds = plan['datastore']
    ds_bak = ds + '_BAK'
    if os.path.lexists(ds_bak):
        raise Fail('backup_exists', 'slot %d: %s exists from an earlier run' % (plan['slot'], ds_bak), slot=plan['slot'])
    copy_tree(ds, ds_bak)
    with open(os.path.join(ds, 'FAKE_MIGRATED'), 'w') as f:
        f.write('3.12\n')
    st = os.lstat(ds_bak)
    return {'datastore': ds_bak, 'datastore_dev': st.st_dev, 'datastore_ino': st.st_ino}


def switch_back(plan):
    ds = plan['datastore']
    shutil.rmtree(ds)
    os.rename(ds + '_BAK', ds)


def check_apply_pins(plan):
    so, user = plan['_pins']
    if plan['changed'] and (so is None or user is None):
        raise Fail('bad_request', 'slot %d: apply needs the SO PIN and the user PIN' % plan['slot'], slot=plan['slot'])


def apply_slots(conf, plans):
    """Applies every plan, all or nothing. Returns the slot outcomes and the conf backup record."""
    todo = [p for p in plans if p['changed']]
    for p in todo:
        check_apply_pins(p)
        if os.path.lexists(p['datastore'] + '_BAK'):
            raise Fail('backup_exists', 'slot %d: %s exists from an earlier run' % (p['slot'], p['datastore'] + '_BAK'),
                       slot=p['slot'])
    before = list(conf.lines)
    fail_slot = os.environ.get('FAKE_FAIL_SLOT')
    done = []
    conf_bak = None
    outcomes = dict((p['slot'], {'slot': p['slot'], 'outcome': 'unchanged' if not p['changed'] else 'not_started'})
                    for p in plans)
    try:
        if todo:
            bak, st = conf.keep_pristine()
            conf_bak = {'conf': bak}
            if st is not None:
                conf_bak.update(conf_dev=st.st_dev, conf_ino=st.st_ino)
        for p in todo:
            if fail_slot and int(fail_slot) == p['slot']:
                raise Fail('io_error', 'slot %d: the disk said no (FAKE_FAIL_SLOT)' % p['slot'], slot=p['slot'])
            backup = switch_repository(p)
            backup.update(conf_bak)
            done.append(p)
            outcomes[p['slot']] = {'slot': p['slot'], 'outcome': 'migrated', 'result': result(
                'apply', p, changed=True, backup=backup, objects_migrated=len(p['objects']),
                repository_changed=True, conf_changed=True, conf_diff=p['conf_diff'], fingerprint='sha256:1')}
        if todo:
            conf.write(with_tokversion(conf.lines, [p['slot'] for p in todo]))
    except Fail as e:
        for p in done:
            switch_back(p)
            outcomes[p['slot']] = {'slot': p['slot'], 'outcome': 'switched_back'}
        conf.write(before)
        if e.details.get('slot') is not None:
            outcomes[e.details['slot']] = {'slot': e.details['slot'], 'outcome': 'failed',
                                           'error': {'code': e.code, 'message': e.message}}
        e.details['slots'] = [outcomes[p['slot']] for p in plans]
        raise
    for p in plans:
        if not p['changed']:
            outcomes[p['slot']]['result'] = result('apply', p, verified=True)
    return [outcomes[p['slot']] for p in plans]


def rollback_slot(conf, sreq):
    slot = sreq['slot']
    datastore = os.path.abspath(sreq.get('datastore') or '/var/lib/opencryptoki/swtok')
    ds_bak = datastore + '_BAK'
    repo = os.path.isdir(ds_bak)
    # the slot's line is taken back once its repository is old (again)
    line = slot_migrated(conf.lines, slot) and (repo or not os.path.exists(os.path.join(datastore, 'FAKE_MIGRATED')))
    if not repo and not line:
        raise Fail('nothing_to_roll_back', 'slot %d: nothing to roll back: no %s and no tokversion line' % (slot, ds_bak),
                   slot=slot)
    if repo:
        shutil.rmtree(datastore)
        os.rename(ds_bak, datastore)
    before = conf.lines
    if line:
        conf.write(without_tokversion(conf.lines, slot))
    return {'changed': True, 'operation': 'rollback', 'slot': slot, 'token_type': 'Soft',
            'datastore': datastore, 'conf': conf.path, 'backup': {},
            'objects_migrated': 0, 'objects_total': 0, 'repository_changed': repo,
            'conf_changed': line, 'conf_diff': udiff(before, conf.lines), 'verified': False,
            'fingerprint': 'sha256:0', 'warnings': [], 'steps': ['exchange'] if repo else []}


def host(sub, req):
    slots = req['slots']
    if not isinstance(slots, list) or not slots:
        raise Fail('bad_request', 'slots must be a non-empty list')
    for k in ('slot', 'datastore', 'so_pin', 'user_pin', 'so_pin_file', 'user_pin_file'):
        if k in req:
            raise Fail('bad_request', '%s and slots are mutually exclusive' % k)
    seen = set()
    for s in slots:
        unknown = set(s) - KNOWN_SLOT
        if unknown:
            raise Fail('bad_request', 'unknown slot field %s' % sorted(unknown)[0])
        if not isinstance(s.get('slot'), int) or s['slot'] in seen:
            raise Fail('bad_request', 'every slot needs a slot number, each once')
        seen.add(s['slot'])
        for a, b in (('so_pin', 'so_pin_file'), ('user_pin', 'user_pin_file')):
            if a in s and b in s:
                raise Fail('bad_request', 'slot %d: %s and %s are mutually exclusive' % (s['slot'], a, b))
    conf = Conf(req.get('confdir'))
    if sub == 'rollback':
        before = list(conf.lines)
        out = []
        for s in slots:
            try:
                r = rollback_slot(conf, dict((k, v) for k, v in s.items() if k in ('slot', 'datastore')))
                out.append({'slot': s['slot'], 'outcome': 'rolled_back', 'result': r})
            except Fail as e:
                if e.code != 'nothing_to_roll_back':
                    raise
                out.append({'slot': s['slot'], 'outcome': 'unchanged'})
        print(json.dumps({'changed': any(o['outcome'] == 'rolled_back' for o in out), 'operation': 'rollback',
                          'confdir': conf.confdir, 'conf': conf.path, 'conf_changed': before != conf.lines,
                          'conf_diff': udiff(before, conf.lines), 'slots': out, 'warnings': []}))
        return 0
    plans = []
    for s in slots:
        try:
            plans.append(slot_plan(conf, s))
        except Fail as e:
            if sub == 'apply':
                e.details['slots'] = [{'slot': x['slot'], 'outcome': 'failed' if x['slot'] == s['slot'] else 'not_started'}
                                      for x in slots]
                if e.code != 'bad_request':
                    e.details['slots'][[x['slot'] for x in slots].index(s['slot'])]['error'] = {
                        'code': e.code, 'message': e.message}
            raise
    changed = any(p['changed'] for p in plans)
    after = with_tokversion(conf.lines, [p['slot'] for p in plans if p['changed']])
    if sub == 'plan':
        print(json.dumps({'format_version': 1, 'changed': changed, 'confdir': conf.confdir, 'conf': conf.path,
                          'conf_diff': udiff(conf.lines, after), 'plans': [public(p) for p in plans],
                          'space': [], 'warnings': []}))
        return 2 if changed else 0
    if sub != 'apply':
        raise Fail('bad_request', 'unknown command %s' % sub)
    before = list(conf.lines)
    outcomes = apply_slots(conf, plans)
    print(json.dumps({'changed': changed, 'operation': 'apply', 'confdir': conf.confdir, 'conf': conf.path,
                      'conf_changed': before != conf.lines, 'conf_diff': udiff(before, conf.lines),
                      'slots': outcomes, 'warnings': []}))
    return 0


def single(sub, req):
    for a, b in (('so_pin', 'so_pin_file'), ('user_pin', 'user_pin_file')):
        if a in req and b in req:
            raise Fail('bad_request', '%s and %s are mutually exclusive' % (a, b))
    slot = req.get('slot')
    if not isinstance(slot, int):
        raise Fail('bad_request', 'slot is required')
    conf = Conf(req.get('confdir'))
    if sub == 'rollback':
        print(json.dumps(rollback_slot(conf, req)))
        return 0
    plan = slot_plan(conf, req)
    if sub == 'plan':
        print(json.dumps(public(plan)))
        return 2 if plan['changed'] else 0
    if sub != 'apply':
        raise Fail('bad_request', 'unknown command %s' % sub)
    if not plan['changed']:
        print(json.dumps(result('apply', plan)))
        return 0
    outcomes = apply_slots(conf, [plan])
    print(json.dumps(outcomes[0]['result']))
    return 0


def main():
    if len(sys.argv) != 4 or sys.argv[2:] != ['--request', '-']:
        die('bad_request', 'usage: pkcstok-migrate plan|apply|rollback|remove-backups --request -')
    sub = sys.argv[1]
    try:
        req = json.load(sys.stdin)
    except ValueError:
        die('bad_request', 'the request is not JSON')
    if sub == 'remove-backups':
        return remove_backups(req)
    unknown = set(req) - KNOWN
    if unknown:
        die('bad_request', 'unknown request field %s' % sorted(unknown)[0])
    try:
        if 'slots' in req:
            return host(sub, req)
        return single(sub, req)
    except Fail as e:
        die(e.code, e.message, **e.details)


def remove_backups(req):
    unknown = set(req) - KNOWN_REMOVE
    if unknown:
        die('bad_request', 'unknown request field %s (remove-backups takes no PIN)' % sorted(unknown)[0])
    slot = req.get('slot')
    backup = req.get('backup')
    if not isinstance(slot, int) or not isinstance(backup, dict):
        die('bad_request', 'remove-backups needs slot and the backup object of apply\'s result')
    confdir = os.path.abspath(req.get('confdir') or '/etc/opencryptoki')
    datastore = os.path.abspath(req.get('datastore') or '/var/lib/opencryptoki/swtok')
    names = {'datastore': datastore + '_BAK', 'conf': os.path.join(confdir, 'opencryptoki.conf') + '_BAK'}
    todo = []
    for key in ('datastore', 'conf'):
        path = backup.get(key)
        if not path:
            continue
        if path != names[key]:
            die('bad_request', 'backup.%s is %s, not this slot\'s backup %s' % (key, path, names[key]))
        dev, ino = backup.get(key + '_dev'), backup.get(key + '_ino')
        if not isinstance(dev, int) or not isinstance(ino, int):
            if key == 'conf':
                continue  # an entry this run did not make: never removed
            die('bad_request', 'backup.%s_dev and backup.%s_ino are required' % (key, key))
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (dev, ino):
            die('verify_failed', '%s is not the backup apply made (device and inode differ): refusing, '
                'nothing removed' % path, path=path)
        todo.append((path, os.path.isdir(path) and not os.path.islink(path)))
    removed = []
    for path, isdir in todo:
        if isdir:
            shutil.rmtree(path)
        else:
            os.unlink(path)
        removed.append(path)
    print(json.dumps({'changed': bool(removed), 'operation': 'remove_backups', 'slot': slot, 'removed': removed}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
