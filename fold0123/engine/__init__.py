"""The training loop, the optimiser and schedule, the evaluator and the checkpoint watcher behind train.py and
evaluate.py. The run directory (common.rundir) is the only thing they share: train.py writes it, evaluate.py adds
eval/ to it, and the stacking step reads it. See DESIGN.md section 3.
"""
