# tree-shape.py [N]: the state tree's shape for N random keys (default 200,000): branches per
# key, and the share of branches with an empty side (each was an allocation holding nothing
# before empty children shared one node). The tree keeps a key's leaf at the shallowest depth
# where its subtree holds only that key, and a branch at every depth above it (no path
# compression), as node/src/state/root.rs does; 64-bit random paths stand in for SHA-256.
import bisect, random, sys
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
random.seed(1)
keys = sorted(random.getrandbits(64) for _ in range(N))
branches = one_sided = 0
stack = [(0, N, 0)]
while stack:
    lo, hi, depth = stack.pop()
    if hi - lo < 2:
        continue
    branches += 1
    bit = 1 << (63 - depth)
    # keys[lo:hi] share their first `depth` bits; the first with this bit set splits them
    a, b = lo, hi
    while a < b:
        c = (a + b) // 2
        if keys[c] & bit:
            b = c
        else:
            a = c + 1
    if a in (lo, hi):
        one_sided += 1
    stack.append((lo, a, depth + 1))
    stack.append((a, hi, depth + 1))
print(f"{N} keys: {branches} branches ({branches / N:.3f} per key), "
      f"{one_sided} with an empty side ({100 * one_sided / branches:.1f}%, {one_sided / N:.3f} per key)")
