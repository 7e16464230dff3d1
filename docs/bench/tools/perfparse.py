import json,re
def samples(path):
    """yields (pid, [symbols leaf first]) from perf script output"""
    pid=None; syms=[]
    hdr=re.compile(r'^\S.*?\s+(\d+)/(\d+)\s+')
    for line in open(path, errors='replace'):
        if not line.strip():
            if pid is not None: yield pid, syms
            pid=None; syms=[]; continue
        if line[0] not in ' \t':
            m=hdr.match(line)
            pid=int(m.group(1)) if m else -1
            syms=[]
        else:
            parts=line.strip().split(None,1)
            if len(parts)==2: syms.append(parts[1])
    if pid is not None: yield pid, syms
def validator_pids(out):
    d=json.load(open(out+'/results.json'))
    s=d['steps'][0]
    return {p['pid'] for p in s['processes'] if '/' not in p['name']}, s
