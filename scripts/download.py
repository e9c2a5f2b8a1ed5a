"""Fetch and verify a dataset pair's files, without training.

    python scripts/download.py --list                          # what can be fetched, from where
    python scripts/download.py svhn_to_mnist --root data       # SVHN + MNIST into data/
    python scripts/download.py mnist_to_mnistm --root data --mirror https://my.mirror/mnist

Then `python train.py dataset=<pair> dataset.root=data`. The same happens inside a run with
`dataset.download=true`. Exit status 0 only when every file was downloaded and verified (or was
already there and verified); 2 with the URLs tried and the manual instructions otherwise.
"""

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dann.data.download import MIRRORS_ENV, fetch  # noqa: E402
from dann.data.sources import PAIR_SOURCES, all_sources, sources_for  # noqa: E402
from dann.errors import reported_as_exit  # noqa: E402


def listing() -> str:
    lines = [
        "| source | files | checksums | mirrors and links | pairs | notes |",
        "|---|---|---|---|---|---|",
    ]
    for name, source in all_sources().items():
        pairs = ", ".join(p for p, names in PAIR_SOURCES.items() if name in names)
        files = ", ".join(f.name for f in source.files)
        sums = ", ".join(
            f.checksum.split(":")[0] if f.checksum else "NOT CONFIRMED" for f in source.files
        )
        where = ", ".join([*source.mirrors, *(url for f in source.files for url in f.urls)])
        lines.append(f"| {name} | {files} | {sums} | {where} | {pairs} | {source.notes} |")
    return "\n".join(lines) + f"\n\nExtra mirrors: --mirror URL or {MIRRORS_ENV}=URL,URL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "pair", nargs="?", help="a pair or a source: " + ", ".join([*PAIR_SOURCES, *all_sources()])
    )
    parser.add_argument("--root", default="data", help="the folder to fill (dataset.root)")
    parser.add_argument("--mirror", action="append", default=[], help="a base URL, tried first")
    parser.add_argument("--list", action="store_true", help="what can be fetched, and from where")
    args = parser.parse_args()
    if args.list or not args.pair:
        print(listing())
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with reported_as_exit():
        for source in sources_for(args.pair):
            fetch(source, args.root, mirrors=args.mirror)
    print(f"done: python train.py dataset={args.pair} dataset.root={args.root}")


if __name__ == "__main__":
    main()
