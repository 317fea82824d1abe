"""The daemon: watch the export folders, run the pipeline in workers, report, retrain."""
