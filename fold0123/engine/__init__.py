"""The training loop, the evaluator and the checkpoint watcher behind train.py and evaluate.py.

The run directory (data.rundir) is the only thing the pieces share: train.py writes it, evaluate.py adds
eval/ to it, and the stacking step reads it. See DESIGN.md section 3.
"""
