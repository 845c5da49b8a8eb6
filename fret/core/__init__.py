"""The spine: the runner, the stage base, shards and manifests, config loading, records, errors.

It runs any pipeline and knows none: the runner and the config loader find stages through the
registry in fret.stages.
"""
