"""Question-graph features on hand-made graphs with known values, and against networkx."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from pipelines.quora import graph


def test_frequency_counts_every_appearance():
    # question 0 asked three times (twice as q1, once as q2); an identical pair counts both sides
    q1 = np.array([0, 0, 1, 3])
    q2 = np.array([1, 2, 0, 3])
    freq = graph.question_frequency(q1, q2, 4)
    assert freq.tolist() == [3, 2, 1, 2]
    f = graph.graph_features(q1, q2, 4)
    assert f["graph_q1_freq"].tolist() == [3, 3, 2, 2]
    assert f["graph_freq_min"].tolist() == [2, 1, 2, 2]
    assert f["graph_freq_max"].tolist() == [3, 3, 3, 2]


def test_triangle_has_kcore_two_and_a_pendant_one():
    # triangle 0-1-2 plus pendant 3 on 2, an isolated self-pair 4-4, and a repeated edge
    q1 = np.array([0, 1, 2, 2, 4, 0])
    q2 = np.array([1, 2, 0, 3, 4, 1])
    adj = graph.adjacency(q1, q2, 5)
    assert adj.nnz == 8  # 4 distinct undirected edges, self-loop and repeat dropped
    assert graph.core_numbers(adj).tolist() == [2, 2, 2, 1, 0]
    f = graph.graph_features(q1, q2, 5)
    assert f["graph_q1_kcore"].tolist() == [2, 2, 2, 2, 0, 2]
    assert f["graph_q2_kcore"].tolist() == [2, 2, 2, 1, 0, 2]
    assert f["graph_kcore_min"].tolist() == [2, 2, 2, 1, 0, 2]
    assert f["graph_component_size"].tolist() == [4, 4, 4, 4, 1, 4]


def test_common_neighbours_count_and_share():
    # 0 and 1 both linked to 2, 3 and 4; 1 also to 5
    edges = [(0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4), (1, 5), (0, 1)]
    q1 = np.array([a for a, _ in edges])
    q2 = np.array([b for _, b in edges])
    f = graph.graph_features(q1, q2, 6)
    last = f.iloc[-1]  # the pair (0, 1)
    assert last["graph_common_neighbours"] == 3
    # N(0) = {1,2,3,4}, N(1) = {0,2,3,4,5}: union {0,...,5} has 6 members
    assert last["graph_common_share"] == pytest.approx(3 / 6)
    assert f["graph_common_neighbours"].iloc[0] == 1  # (0, 2): both linked to 1
    adj = graph.adjacency(q1, q2, 6)
    # chunking by work does not change the answer
    assert (graph.common_neighbours(adj, q1, q2, max_entries=3) == graph.common_neighbours(adj, q1, q2)).all()


def test_graph_columns_are_float32_and_finite_with_no_neighbours():
    f = graph.graph_features(np.array([0]), np.array([1]), 2)
    assert all(c.startswith("graph_") for c in f.columns)
    assert all(dt == np.float32 for dt in f.dtypes)
    assert np.isfinite(f.to_numpy()).all()
    assert f["graph_common_share"].iloc[0] == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_core_numbers_and_components_match_networkx(seed):
    rng = np.random.default_rng(seed)
    n, m = 400, [300, 700, 1200, 2000][seed]
    q1, q2 = rng.integers(0, n, m), rng.integers(0, n, m)
    # a long chain peels one node per round at k = 1
    chain = np.arange(n - 60, n - 1)
    q1, q2 = np.concatenate([q1, chain]), np.concatenate([q2, chain + 1])
    adj = graph.adjacency(q1, q2, n)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from((int(a), int(b)) for a, b in zip(q1, q2) if a != b)
    expected = nx.core_number(g)
    assert graph.core_numbers(adj).tolist() == [expected[i] for i in range(n)]
    sizes = {v: len(c) for c in nx.connected_components(g) for v in c}
    assert graph.component_sizes(adj).tolist() == [sizes[i] for i in range(n)]
    common = graph.common_neighbours(adj, q1, q2)
    assert common.tolist() == [len(set(g[a]) & set(g[b])) for a, b in zip(q1.tolist(), q2.tolist())]


def test_two_hop_walks_and_pagerank_on_a_path_match_networkx():
    # path 0-1-2 plus an isolated question 3 and an identical pair (3, 3): no self-loop
    q1, q2 = np.array([0, 1, 3]), np.array([1, 2, 3])
    adj = graph.adjacency(q1, q2, 4)
    assert graph.two_hop_walks(adj).tolist() == [2, 2, 2, 0]  # 0 -> 1 -> {0, 2}; 1 -> {0, 2} -> 1 each
    rank = graph.pagerank(adj, n_iter=100)
    g = nx.Graph([(0, 1), (1, 2)])
    g.add_node(3)
    expected = nx.pagerank(g, alpha=0.85, tol=1e-10, max_iter=1000)
    np.testing.assert_allclose(rank, [expected[i] for i in range(4)], atol=1e-6)
    assert rank.sum() == pytest.approx(1.0)
    f = graph.graph_features(q1, q2, 4)
    assert f["graph_two_hop_min"].tolist() == [2, 2, 0] and f["graph_two_hop_max"].tolist() == [2, 2, 0]
    assert f["graph_pagerank_max"].iloc[0] == pytest.approx(4 * graph.pagerank(adj)[1], rel=1e-5)  # 30 iterations
    assert f["graph_pagerank_max"].iloc[0] == pytest.approx(4 * expected[1], rel=1e-2)
    assert np.isfinite(f.to_numpy()).all() and (f.dtypes == np.float32).all()
