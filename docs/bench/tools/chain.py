import sys,re,collections
sys.path.insert(0,__import__('os').path.dirname(__import__('os').path.abspath(__file__))); from perfparse import *
# most common stack paths (own frames only, leaf first, depth D) among samples containing PATTERN
out,perf,pat=sys.argv[1],sys.argv[2],re.compile(sys.argv[3]); N=int(sys.argv[4]) if len(sys.argv)>4 else 15; D=int(sys.argv[5]) if len(sys.argv)>5 else 6
vp,step=validator_pids(out); us=step['validators_cpu_ms_per_tx']*1000
cnt=collections.Counter(); n=0
for pid,syms in samples(perf):
    if pid not in vp: continue
    n+=1
    if not any(pat.search(s) for s in syms): continue
    fr=[re.sub(r'\+0x[0-9a-f]+|\(/.*\)|\(\[.*\]\)','',s).strip()[:70] for s in syms]
    cnt[' < '.join(fr[:D])]+=1
for s,k in cnt.most_common(N): print(f"{100*k/n:5.1f}% {k/n*us:4.0f}us  {s}")
