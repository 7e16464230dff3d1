import sys,re,collections
sys.path.insert(0,__import__('os').path.dirname(__import__('os').path.abspath(__file__))); from perfparse import *
out,perf,pat=sys.argv[1],sys.argv[2],re.compile(sys.argv[3]); N=int(sys.argv[4]) if len(sys.argv)>4 else 25
vp,step=validator_pids(out)
cnt=collections.Counter(); n=0; m=0
for pid,syms in samples(perf):
    if pid not in vp: continue
    n+=1
    if any(pat.search(s) for s in syms):
        m+=1; cnt[syms[0][:110] if syms else '?']+=1
print(f"{m} of {n} validator samples contain the pattern")
for s,k in cnt.most_common(N): print(f"{100*k/max(m,1):5.1f}% {s}")
