import sys,re
sys.path.insert(0,__import__('os').path.dirname(__import__('os').path.abspath(__file__))); from perfparse import *
out,perf=sys.argv[1],sys.argv[2]; pats=[(p,re.compile(p)) for p in sys.argv[3:]]
vp,step=validator_pids(out)
us=step['validators_cpu_ms_per_tx']*1000
n=0; c=[0]*len(pats); tot=0
for pid,syms in samples(perf):
    tot+=1
    if pid not in vp: continue
    n+=1
    for i,(p,r) in enumerate(pats):
        if any(r.search(s) for s in syms): c[i]+=1
print(f"samples {tot}, validators {n} ({100*n/max(tot,1):.1f}%), {us:.0f} us/tx")
for i,(p,r) in enumerate(pats):
    f=c[i]/max(n,1); print(f"{100*f:5.1f}%  {f*us:5.0f} us/tx  {p}")
