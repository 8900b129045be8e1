"""Uniform soup of a folder of checkpoints, from any runs (the ACCV 2022 winner's `tools/model_soup.py
--model-folder`); evaluate.py --soup N soups the last N epochs of one run instead.

    python soup.py --model-folder DIR [--pattern "*.pth"] --out soup.pth

Every checkpoint must hold the same architecture (one line naming the file and the first differing key
otherwise); the soup is a checkpoint like any other (`train.py --set transfer_from=soup.pth`, evaluate.py).
"""
from __future__ import annotations

import argparse

from fold0123.common.errors import cli_main
from fold0123.models.soup import soup_folder


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-folder", required=True, help="the folder of .pth checkpoints to average")
    parser.add_argument("--pattern", default="*.pth", help="which files of the folder (default: *.pth)")
    parser.add_argument("--out", required=True, help="the soup's path")
    args = parser.parse_args(argv)
    print(f"wrote {soup_folder(args.model_folder, args.out, args.pattern)}")


if __name__ == "__main__":
    main()
