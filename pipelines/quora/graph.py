"""Question-graph ("magic") features: questions are nodes, every train and test pair an edge.

How often a question is asked, how many neighbours two questions share, how deep in the graph's
k-core a question sits and how large its connected component is carried the top Kaggle solutions
(duplicates cluster; the test set's generated questions are leaves). Built over train+test
together, with scipy.sparse / numpy so that Kaggle's ~4.8M nodes and 2.75M edges fit in little
memory and time (networkx would need several GB for the graph alone; BENCHMARKS.md, quora-features,
step graph).

Definitions (graph = undirected, duplicate edges merged, self-loops removed):
  * ``freq``: number of pairs (train+test) the question appears in, counting repeats and both sides
    of an identical pair;
  * ``common_neighbours``: |N(q1) ∩ N(q2)|; ``common_share``: that over |N(q1) ∪ N(q2)| (0 if empty);
  * ``kcore``: core number (largest k such that the question is in the k-core), by batch peeling;
  * ``component_size``: number of questions in the pair's connected component;
  * ``two_hop_{min,max}``: walks of length two from each question (sum of its neighbours'
    degrees): how busy a question's neighbourhood is, even when it was asked once;
  * ``pagerank_{min,max}``: PageRank (damping 0.85, 30 power iterations, dangling mass spread
    uniformly), times the number of questions so that 1 is the average. Added alone, these four
    columns gained little on the real rows (a sparse graph there).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from pipelines.quora.text import gather_rows

log = logging.getLogger(__name__)


def adjacency(qid1: np.ndarray, qid2: np.ndarray, n_nodes: int) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency (int8 CSR, sorted indices) without self-loops or repeated edges."""
    qid1 = np.asarray(qid1, dtype=np.int64)
    qid2 = np.asarray(qid2, dtype=np.int64)
    keep = qid1 != qid2
    rows = np.concatenate([qid1[keep], qid2[keep]])
    cols = np.concatenate([qid2[keep], qid1[keep]])
    adj = sp.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n_nodes, n_nodes))
    adj.sum_duplicates()
    adj.data[:] = 1
    adj.sort_indices()
    return adj


def question_frequency(qid1: np.ndarray, qid2: np.ndarray, n_nodes: int) -> np.ndarray:
    return np.bincount(np.concatenate([qid1, qid2]).astype(np.int64), minlength=n_nodes)


def common_neighbours(adj: sp.csr_matrix, u: np.ndarray, v: np.ndarray, max_entries: int = 20_000_000) -> np.ndarray:
    """|N(u) ∩ N(v)| of each pair, by multiplying the two adjacency rows, in chunks of at most
    ``max_entries`` adjacency entries (hub questions have thousands of neighbours)."""
    out = np.zeros(len(u), dtype=np.int64)
    degree = np.diff(adj.indptr)
    work = np.cumsum(degree[u] + degree[v] + 1)
    bounds = np.searchsorted(work, np.arange(max_entries, work[-1] + max_entries, max_entries)) if len(u) else []
    bounds = np.unique(np.concatenate([[0], np.minimum(np.asarray(bounds) + 1, len(u)), [len(u)]])).astype(np.int64)
    spans = list(zip(bounds[:-1], bounds[1:]))
    for start, stop in tqdm(spans, desc="common neighbours", unit="chunk", disable=len(spans) < 2):
        both = adj[u[start:stop]].multiply(adj[v[start:stop]])
        out[start:stop] = np.asarray(both.sum(axis=1)).ravel()
    return out


def core_numbers(adj: sp.csr_matrix) -> np.ndarray:
    """Core number of every node (networkx.core_number semantics), by vectorised batch peeling.

    At level k every live node of degree <= k is removed at once (its core number is k) and its
    neighbours' degrees drop; removal repeats until no node of degree <= k is left, then k rises to
    the smallest live degree. Each round touches only the removed nodes' edges, so the total work is
    O(edges) plus O(nodes) per distinct level.
    """
    n = adj.shape[0]
    indptr, indices = adj.indptr.astype(np.int64), adj.indices.astype(np.int64)
    degree = np.diff(indptr).astype(np.int64)
    core = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    remaining = n
    k = 0
    while remaining:
        live = np.flatnonzero(alive)
        k = max(k, int(degree[live].min()))
        frontier = live[degree[live] <= k]
        while frontier.size:
            core[frontier] = k
            alive[frontier] = False
            remaining -= frontier.size
            _, neighbours = gather_rows(indptr, indices, frontier)
            neighbours = neighbours[alive[neighbours]]
            if not neighbours.size:
                break
            touched, drops = np.unique(neighbours, return_counts=True)
            degree[touched] -= drops
            frontier = touched[degree[touched] <= k]
    return core


def component_sizes(adj: sp.csr_matrix) -> np.ndarray:
    """Size of the connected component of every node."""
    _, labels = connected_components(adj, directed=False)
    return np.bincount(labels)[labels]


def two_hop_walks(adj: sp.csr_matrix) -> np.ndarray:
    """Number of length-2 walks from each node (the sum of its neighbours' degrees)."""
    degree = np.diff(adj.indptr).astype(np.float64)
    return adj.astype(np.float64) @ degree


def pagerank(adj: sp.csr_matrix, damping: float = 0.85, n_iter: int = 30) -> np.ndarray:
    """PageRank of every node (sums to 1; nodes without edges spread their mass uniformly)."""
    n = adj.shape[0]
    if n == 0:
        return np.zeros(0)
    degree = np.diff(adj.indptr).astype(np.float64)
    a = adj.astype(np.float64).T.tocsr()
    rank = np.full(n, 1.0 / n)
    for _ in range(n_iter):
        share = np.divide(rank, degree, out=np.zeros(n), where=degree > 0)
        dangling = rank[degree == 0].sum()
        rank = (1.0 - damping) / n + damping * (a @ share + dangling / n)
    return rank


def graph_features(qid1: np.ndarray, qid2: np.ndarray, n_nodes: int) -> pd.DataFrame:
    """``graph_*`` float32 columns for every pair (all parts' pairs, in order)."""
    qid1 = np.asarray(qid1, dtype=np.int64)
    qid2 = np.asarray(qid2, dtype=np.int64)
    freq = question_frequency(qid1, qid2, n_nodes)
    adj = adjacency(qid1, qid2, n_nodes)
    degree = np.diff(adj.indptr)
    log.info("question graph: %d questions, %d distinct edges, %d self-pairs", n_nodes, adj.nnz // 2,
             int((qid1 == qid2).sum()))
    common = common_neighbours(adj, qid1, qid2)
    union = degree[qid1] + degree[qid2] - common
    core = core_numbers(adj)
    size = component_sizes(adj)
    f1, f2 = freq[qid1], freq[qid2]
    k1, k2 = core[qid1], core[qid2]
    features = {
        "graph_q1_freq": f1,
        "graph_q2_freq": f2,
        "graph_freq_min": np.minimum(f1, f2),
        "graph_freq_max": np.maximum(f1, f2),
        "graph_common_neighbours": common,
        "graph_common_share": np.divide(common, union, out=np.zeros(len(common)), where=union > 0),
        "graph_q1_kcore": k1,
        "graph_q2_kcore": k2,
        "graph_kcore_min": np.minimum(k1, k2),
        "graph_kcore_max": np.maximum(k1, k2),
        "graph_component_size": size[qid1],
    }
    walks = two_hop_walks(adj)
    rank = pagerank(adj) * n_nodes
    features.update({
        "graph_two_hop_min": np.minimum(walks[qid1], walks[qid2]),
        "graph_two_hop_max": np.maximum(walks[qid1], walks[qid2]),
        "graph_pagerank_min": np.minimum(rank[qid1], rank[qid2]),
        "graph_pagerank_max": np.maximum(rank[qid1], rank[qid2]),
    })
    return pd.DataFrame({name: np.asarray(values, dtype=np.float32) for name, values in features.items()})
