# tasks.py OUT PERF: the validators' samples by the first task-level pattern (outermost frames first) that matches.
import sys,re,collections
sys.path.insert(0,__import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from perfparse import *
out,perf=sys.argv[1],sys.argv[2]
vp,step=validator_pids(out); us=step['validators_cpu_ms_per_tx']*1000
cats=[
 ('ledger append (blocking)', r'Ledger::append'),
 ('journal write (blocking)', r'write_consensus'),
 ('verify_inbound (blocking/inline)', r'verify_inbound'),
 ('admission verify', r'Admission::verify'),
 ('admission window', r'admission_window'),
 ('execute_block', r'execute_block'),
 ('chaincode session', r'chaincode::'),
 ('pbft core', r'pbft::replica|Replica::handle|pbft::'),
 ('driver', r'consensus::driver'),
 ('wire sign/encode', r'Wire::sign|Wire::encode|Wire::proof'),
 ('client api', r'api::|ClientService'),
 ('consensus service', r'network::service|ConsensusService'),
 ('peers send', r'network::peers'),
 ('certificates', r'certificates::'),
 ('tonic other', r'tonic::'),
 ('rocksdb bg', r'rocksdb::(FlushJob|CompactionJob|DBImpl::BGWork|DBImpl::Background)'),
 ('h2/hyper', r'h2::|hyper::'),
 ('tokio sched', r'tokio::runtime'),
]
cnt=collections.Counter(); n=0
for pid,syms in samples(perf):
    if pid not in vp: continue
    n+=1
    root_first=list(reversed(syms))
    c='other'
    for name,pat in cats:
        if any(re.search(pat,s) for s in root_first):
            c=name;break
    cnt[c]+=1
for k,v in cnt.most_common(): print(f"{100*v/n:5.1f}% {v/n*us:5.0f} us/tx {k}")
