"""The daemon, `chromowatch run`, and what it is made of.

daemon (supervisor and its three loops) -> watch (folders -> ledger), ledger (the rules of a
file's states), workers (processes running pipeline.prepare), model (the current ensemble and
its reloads), samples (which sample a file belongs to, completion and its hooks), retrain (the
nightly job), metrics, sdnotify; connections (one database connection per thread); status (the
read side, for `chromowatch status`); rescore (stored crops classified again by a new model:
the daemon's passes and `chromowatch reclassify`); crops (`chromowatch crops import`).
"""
