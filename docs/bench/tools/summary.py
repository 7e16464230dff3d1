import json,sys
d=json.load(open(sys.argv[1]+'/results.json'))
m=d['machine']
print(f"sha {m.get('sha256_mib_per_s',0):.0f} MiB/s ed25519 {m.get('ed25519_verify_us')}")
for s in d['steps']:
    l=s['latency']
    print(f"{s['label']}: committed {s['committed_tx_per_s']:.0f} tx/s p50 {l['p50_ms']:.1f} p99 {l['p99_ms']:.1f} ms; validators {s['validators_cpu_ms_per_tx']:.3f} cc {s['chaincode_cpu_ms_per_tx']:.3f} bench {s['bench_cpu_ms_per_tx']:.3f} ms/tx; block {s['mean_block_transactions']:.1f}; rss {s['max_node_peak_rss_mib']:.0f} MiB; rejected {s['rejected']} vc {s['view_changes']}")
    if s.get('admission_batch_mean') is not None or s.get('relay_batch_mean') is not None:
        print(f"   per signature batch: admission {s.get('admission_batch_mean') or 0:.2f}, relay {s.get('relay_batch_mean') or 0:.2f} tx"
              + (f"; checked at admission per commit {s['admission_checks_per_commit']:.2f}" if s.get('admission_checks_per_commit') is not None else ""))
    for st in s.get('stages',[]):
        print(f"   {st['stage']}: mean {st['mean_ms']:.1f} ms")
