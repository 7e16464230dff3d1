import sys,re,collections
sys.path.insert(0,__import__('os').path.dirname(__import__('os').path.abspath(__file__))); from perfparse import *
# for samples whose stack contains PATTERN, count the first weft_node/weft_proto frame above it
out,perf,pat=sys.argv[1],sys.argv[2],re.compile(sys.argv[3]); N=int(sys.argv[4]) if len(sys.argv)>4 else 25
own=re.compile(sys.argv[5] if len(sys.argv)>5 else r'weft_node::|weft_proto::')
vp,step=validator_pids(out); us=step['validators_cpu_ms_per_tx']*1000
cnt=collections.Counter(); n=0
for pid,syms in samples(perf):
    if pid not in vp: continue
    n+=1
    idx=[i for i,s in enumerate(syms) if pat.search(s)]
    if not idx: continue
    i=idx[-1]
    caller=next((s for s in syms[i+1:] if own.search(s) and not pat.search(s)),'?')
    cnt[re.sub(r'\+0x[0-9a-f]+','',caller)[:130]]+=1
for s,k in cnt.most_common(N): print(f"{100*k/n:5.1f}% {k/n*us:5.0f} us/tx {s}")
