import sys,re,collections
sys.path.insert(0,__import__('os').path.dirname(__import__('os').path.abspath(__file__))); from perfparse import *
out,perf=sys.argv[1],sys.argv[2]; N=int(sys.argv[3]) if len(sys.argv)>3 else 40
vp,step=validator_pids(out)
us=step['validators_cpu_ms_per_tx']*1000
selfc=collections.Counter(); n=0
for pid,syms in samples(perf):
    if pid not in vp: continue
    n+=1
    selfc[syms[0][:120] if syms else '?']+=1
print(f"validator samples {n}; {us:.0f} us/tx")
for s,k in selfc.most_common(N): print(f"{100*k/n:5.1f}% {k/n*us:5.0f} us/tx {s}")
