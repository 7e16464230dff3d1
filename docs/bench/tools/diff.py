import sys,re,collections
sys.path.insert(0,__import__('os').path.dirname(__import__('os').path.abspath(__file__))); from perfparse import *
# leaf-symbol us/tx difference between two runs (B - A), validators only; also by own caller
def prof(out,perf,mode):
    vp,step=validator_pids(out); us=step['validators_cpu_ms_per_tx']*1000
    c=collections.Counter(); n=0
    own=re.compile(r'weft_node::|weft_proto::')
    for pid,syms in samples(perf):
        if pid not in vp: continue
        n+=1
        if mode=='leaf': k=syms[0] if syms else '?'
        else: k=next((s for s in syms if own.search(s)),'?')
        c[re.sub(r'\+0x[0-9a-f]+|\s*\(/.*\)|\s*\(\[.*\]\)','',k)[:110]]+=1
    return {k:v/n*us for k,v in c.items()}
mode=sys.argv[5] if len(sys.argv)>5 else 'leaf'
a=prof(sys.argv[1],sys.argv[2],mode); b=prof(sys.argv[3],sys.argv[4],mode)
d=sorted(set(a)|set(b), key=lambda k: -(b.get(k,0)-a.get(k,0)))
for k in d[:25]: print(f"{b.get(k,0)-a.get(k,0):+6.1f}  {a.get(k,0):5.1f} -> {b.get(k,0):5.1f}  {k}")
print('...')
for k in d[-8:]: print(f"{b.get(k,0)-a.get(k,0):+6.1f}  {a.get(k,0):5.1f} -> {b.get(k,0):5.1f}  {k}")
