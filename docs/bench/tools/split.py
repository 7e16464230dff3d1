# split.py OUT PERF OUTER NAME=REGEX...: the validators' samples under OUTER by the first NAME whose REGEX matches a frame.
import sys,re,collections
sys.path.insert(0,__import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from perfparse import *
out,perf,outer=sys.argv[1],sys.argv[2],re.compile(sys.argv[3])
cats=[tuple(a.split('=',1)) for a in sys.argv[4:]]
vp,step=validator_pids(out); us=step['validators_cpu_ms_per_tx']*1000
cnt=collections.Counter(); n=0; m=0
for pid,syms in samples(perf):
    if pid not in vp: continue
    n+=1
    if not any(outer.search(s) for s in syms): continue
    m+=1
    c='other'
    for name,pat in cats:
        if any(re.search(pat,s) for s in syms):
            c=name;break
    cnt[c]+=1
print(f"{m} samples, {m/n*us:.0f} us/tx")
for k,v in cnt.most_common(): print(f"{100*v/m:5.1f}% {v/n*us:5.0f} us/tx {k}")
