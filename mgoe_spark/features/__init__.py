"""Stage 2, features (SPEC 3, 4.5-4.7, 5), in the order a run uses its modules:

- :mod:`.edges`: k-hop macro edges per node, E1_U = S C_I, E2_U = S (S^T C_U), ...;
- :mod:`.neighbors`: the recent micro neighbors per node and task;
- :mod:`.lookup`: the task lookup T^t per user;
- :mod:`.samples`: the labelled samples of the train, valid and test windows;
- :mod:`.examples`: snapshot assignments and the training examples (every feature joined to its sample);
- :mod:`.build`: :func:`~.build.build_features`, the stage's one pure wiring (run and tests call it);
- :mod:`.run`: :func:`~.run.run_features` reads stage 1's tables, persists and writes what build returns.
"""
