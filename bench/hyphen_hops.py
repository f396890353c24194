"""Key switches of HyPHEN's / MPConv+AESPA's rotations under a key set, counted offline.

Usage: python3 bench/hyphen_hops.py RUN/units   (a `ferrolab hyphen` run's units folder)
Reads the simulator's per-step rotation uses (sim-<row>.json) and composes every amount by
breadth-first search from the keyed amounts, as `Ckks::hops` does, but WITHOUT bootstrapping's
own keys (so the counts are upper bounds of the encrypted run's). Also a greedy key choice.
"""
import os, sys
os.chdir(sys.argv[1] if len(sys.argv) > 1 else '.')
import json,sys
from collections import deque
N=32768
def bfs(keys):
    d=[-1]*N; d[0]=0; q=deque([0])
    while q:
        r=q.popleft()
        for k in keys:
            t=(r+k)%N
            if d[t]<0: d[t]=d[r]+1; q.append(t)
    return d
pw=[1<<i for i in range(15)]
ex=[31,33,32735,32736]
for name in ['hyphen','mpconv_aespa']:
    u={int(k):v for k,v in json.load(open(f'sim-{name}.json'))['step_uses'].items()}
    tot=sum(u.values())
    for label,keys in [('pow2+4',pw+ex),('±pow2+4',pw+[N-p for p in pw]+ex),('pow2+all',pw+list(u))]:
        d=bfs(sorted(set(k%N for k in keys)))
        ks=sum(v*d[s%N] for s,v in u.items())
        print(name,label,len(set(keys)),'rot',tot,'ks',ks)
print('greedy')
uh={int(k):v for k,v in json.load(open('sim-hyphen.json'))['step_uses'].items()}
um={int(k):v for k,v in json.load(open('sim-mpconv_aespa.json'))['step_uses'].items()}
u=dict(uh)
for s,v in um.items(): u[s]=u.get(s,0)+v
def cost(keys,uu):
    d=bfs(sorted(set(k%N for k in keys))); return sum(v*d[s%N] for s,v in uu.items())
for base_label,base in [('pow2',pw),('±pow2',pw+[N-p for p in pw])]:
    keys=list(base); cands=[s for s in u if s not in keys]
    for k in range(1,13):
        best=min(cands,key=lambda c:cost(keys+[c],u))
        keys.append(best); cands.remove(best)
        if k in (4,8,12): print(base_label,k,'extra',keys[len(base):],'hy',cost(keys,uh),'mp',cost(keys,um))
