"""Evaluation of candidate programs: the sandbox that runs them, and the workers that score them."""
