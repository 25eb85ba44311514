# SPDX-License-Identifier: MIT
# Dicts, JSON and sorting: a heap of small objects that moves around.
import json
import random

random.seed(20261121)
records = {}
for i in range(150000):
    records["key-%06d" % i] = {
        "n": i,
        "x": random.random(),
        "tags": [random.choice("abcdefgh") for _ in range(4)],
    }
text = json.dumps(records, sort_keys=True)
back = json.loads(text)
assert back == records
by_x = sorted(back.items(), key=lambda kv: (kv[1]["x"], kv[0]))
counts = {}
for _, r in by_x:
    for t in r["tags"]:
        counts[t] = counts.get(t, 0) + 1
print(len(text), by_x[0][0], by_x[-1][0])
print(sorted(counts.items()))
print(sum(r["n"] for _, r in by_x[::1000]))
