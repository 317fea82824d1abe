"""Confirmed labels in, a fine-tuned ensemble out, promoted only when measurably better.

    labels.py     import (crop folders, YOLO-boxed spreads, CSV) and export of confirmed labels
    dataset.py    crops in memory, the fixed hashed holdout and validation split, batches
    augment.py    random views for training: geometry, and style so that style is no cue
    style.py      the crop style measure (benchmarks/crop_style.py)
    nets.py       start points, frozen trunks shared between members, fast scoring
    finetune.py   the training loop (head first, then the later blocks; early stopping)
    calibrate.py  one temperature for the ensemble, fitted on validation, baked into the weights
    evaluate.py   holdout metrics, member choice on validation, the promotion rule
    job.py        the work done in the training subprocess
    runner.py     `chromowatch train`: nothing new -> nothing done; subprocess; promotion

The package's top level imports no torch. `chromowatch train` checks the member architectures
in the parent (so a typo fails at once) and does all the training in its subprocess (`job`,
one function per phase, each with a typed result).
"""
