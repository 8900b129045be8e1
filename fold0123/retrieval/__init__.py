"""Text-to-image retrieval the Chinese-CLIP way (issue 11): predictions in the MUGE JSONL format and their scorer,
saved similarity matrices and their ensembles, test-time learning on a copy of a model, and the demo.

    predictions  {split}_predictions.jsonl (MUGE format) and similarity matrices (.npy + id orders), read/write
    score        python -m fold0123.retrieval.score PRED --answers A        (Recall@1/5/10, MR)
    predict      python -m fold0123.retrieval.predict --run RUN --split test
    ensemble     python -m fold0123.retrieval.ensemble M1.npy M2.npy [--weights ...] --out DIR
    ttl          python -m fold0123.retrieval.ttl --run RUN --cache DIR [--conf parameters/ttl.yml] [--set k=v]
    ttl_select   python -m fold0123.retrieval.ttl_select --run RUN --cache DIR --grid adapt=all,text ...
                 (the test-time-learning settings, chosen on the valid split's cache)
    demo         python -m fold0123.retrieval.demo (make demo-retrieval)

The training itself is the `clip` task of train.py (models.tasks, models.clip); reading the MUGE layout is the
data room's (data.muge, data.muge_lmdb, data.muge_images), packing it the preprocessing room's (pack_lmdb).
"""
