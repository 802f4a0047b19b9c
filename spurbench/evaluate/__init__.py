"""The evaluating side: scoring classifiers on a dataset, metrics, the leaderboard and its page
(`spurbench eval`, `spurbench leaderboard`). Runs without diffusers; never imports `spurbench.generate`.
"""
