"""The training family's harness: a candidate's `train.py` trained in a sandbox, scored by a trusted process.

One room each:

    spec.py           the settings of one evaluation (task.toml's [training], the environment)
    harness.py        the trusted side: train_one (one seed -> weights), score_weights (weights -> bpb), the backend
    launch.py         starting a sandboxed child: its work dir, its job, its guards' report
    link.py           the socket to a child, its pid from the kernel, /proc read from outside (`quiet`)
    childside.py      what both children do before any candidate code runs (guards, report)
    read_guard.py     Landlock: the held-out shards cannot be opened
    trainer_child.py  the training process: train(data, budget), the weights back as raw tensors
    forward_child.py  the forward process: build_model(info) + the weights, one batch at a time
    scorer.py         the trusted scorer: validation bpb, the causality probe, the unchanged-model checks
    target.py         time to target: seeds in a cascade, the t-test, the record re-timed in session

See docs/training.md for the candidate interface, the checks and what they do not guard.
"""
