"""The native peer of `make bench`'s hnsw section: hnswlib on the same data.

Usage: hnswlib_peer.py DIR DIM M EF_CONSTRUCTION EF...

DIR holds data.f32 (n x DIM), queries.f32 (q x DIM) and truth.u32 (q x 10,
the exact top 10 of each query as row numbers of data), little-endian. Builds
a cosine index on one thread, then for each EF searches every query on one
thread (one batch call, as the wasm side's batched figure) and prints one JSON
line: build seconds, and per ef the recall@10 and queries per second.

Then it serves rounds, so the bench can interleave it with the wasm side
(ours, hnswlib, ours, ... in the same minutes): each line on stdin is
"EF PASSES", answered by one JSON line with the queries per second of PASSES
more passes over every query at that EF. It ends at end of input.
"""

import json
import sys
import time

import hnswlib
import numpy as np


def main():
    folder, dim, m, ef_construction = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    efs = [int(e) for e in sys.argv[5:]]
    data = np.fromfile(f"{folder}/data.f32", dtype="<f4").reshape(-1, dim)
    queries = np.fromfile(f"{folder}/queries.f32", dtype="<f4").reshape(-1, dim)
    truth = np.fromfile(f"{folder}/truth.u32", dtype="<u4").reshape(len(queries), -1)
    k = truth.shape[1]

    index = hnswlib.Index(space="cosine", dim=dim)
    index.init_index(max_elements=len(data), M=m, ef_construction=ef_construction, random_seed=100)
    index.set_num_threads(1)
    started = time.perf_counter()
    index.add_items(data, np.arange(len(data)), num_threads=1)
    build = time.perf_counter() - started

    curve = []
    for ef in efs:
        index.set_ef(max(ef, k))
        index.knn_query(queries[:50], k=k, num_threads=1)  # warm-up
        started = time.perf_counter()
        labels, _ = index.knn_query(queries, k=k, num_threads=1)
        took = time.perf_counter() - started
        hits = sum(len(set(labels[i]) & set(truth[i])) for i in range(len(queries)))
        curve.append({"ef": ef, "recall": hits / truth.size, "qps": len(queries) / took})
    print(json.dumps({"hnswlib": hnswlib.__version__ if hasattr(hnswlib, "__version__") else "0.8.0",
                      "build_s": build, "curve": curve}), flush=True)
    for line in sys.stdin:
        ef, passes = (line.split() + ["1"])[:2]
        index.set_ef(max(int(ef), k))
        started = time.perf_counter()
        for _ in range(int(passes)):
            index.knn_query(queries, k=k, num_threads=1)
        took = time.perf_counter() - started
        print(json.dumps({"qps": int(passes) * len(queries) / took}), flush=True)


if __name__ == "__main__":
    main()
