"""Analysis layer: turns files under ``results/`` into tables, figures and reports.

Nothing here loads a checkpoint or runs a model; every number comes from a metrics.json or
train_log.jsonl file, so a report can always be traced back to the file it came from.
"""
