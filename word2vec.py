"""Tag vectors for every object: `python word2vec.py --dataroot D --dim 20 --epochs 100 --seed 0 [--sg]`.

Word2Vec (window 1, min_count 1) over each object's materials + techniques, a name in both tables split into
`name (material)` and `name (technique)`; an object's vector is the mean of its tokens' vectors (zeros when it has
no tags). Writes D/materialstechniques_w2v{dim}.csv. See fold0123/data/tags.py.
"""
from __future__ import annotations

import argparse

from fold0123.common.errors import cli_main
from fold0123.data.tags import write_tag_vectors


@cli_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataroot", required=True, help="folder in the atmaCup #11 layout")
    parser.add_argument("--dim", type=int, default=20, help="vector size")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sg", action="store_true", help="skip-gram instead of CBOW")
    args = parser.parse_args(argv)
    print(write_tag_vectors(args.dataroot, args.dim, args.epochs, args.seed, args.sg).summary())


if __name__ == "__main__":
    main()
