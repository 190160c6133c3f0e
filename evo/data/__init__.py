"""Training data for the `training` family: corpora built offline, token shards and their manifest."""
