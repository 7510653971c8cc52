"""Stage 1, nodes (SPEC 4.1-4.4), in the order a run uses its modules:

- :mod:`.scores`: merging preference scores per (user, item), Eq 6-7 -> the matrix S;
- :mod:`.sketch`: node vectors Z_U = S (S^T Omega), Z_I = S^T (S Omega), sketched rows of S S^T / S^T S;
- :mod:`.weights`: preference weights per node, Eq 8;
- :mod:`.kmeans`: weighted mini-batch k-means with FAISS on each partition, Eq 9;
- :mod:`.run`: :func:`~.run.run_nodes` wires them for a run date and writes pair_scores, node_vectors,
  node_weights, centroids, kmeans_stats and the train snapshot's assignments.
"""
