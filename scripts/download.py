"""Fetch and verify a dataset pair's files, without training.

    python scripts/download.py --list                          # what can be fetched, from where
    python scripts/download.py svhn_to_mnist --root data       # SVHN + MNIST into data/
    python scripts/download.py mnist_to_mnistm --root data --mirror https://my.mirror/mnist
    python scripts/download.py domainnet --source clipart --target sketch --root data

Then `python train.py dataset=<pair> dataset.root=data`. The same happens inside a run with
`dataset.download=true`. Exit status 0 only when every file was downloaded and verified (or was
already there and verified); 2 with the URLs tried and the manual instructions otherwise.
"""

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dann.data.download import MIRRORS_ENV, fetch_first  # noqa: E402
from dann.data.sources import (  # noqa: E402
    ALTERNATIVES,
    PAIR_SOURCES,
    all_sources,
    is_dead,
    pairs_reading,
    sources_for,
    urls_of,
)
from dann.errors import reported_as_exit  # noqa: E402


def listing() -> str:
    lines = [
        "| source | files | checksums | counts checked | mirrors and links | pairs | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, source in all_sources().items():
        pairs = ", ".join(pairs_reading(name))
        files = ", ".join(f.name for f in source.files)
        sums = ", ".join(
            f.checksum.split(":")[0] if f.checksum else "NOT CONFIRMED" for f in source.files
        )
        where = ", ".join(f"{u} (DEAD)" if is_dead(u) else u for u in urls_of(source))
        counted = "yes" if source.expected else "no"
        lines.append(
            f"| {name} | {files} | {sums} | {counted} | {where} | {pairs} | {source.notes} |"
        )
    tried = [f"{data}: {' -> '.join(names)}" for data, names in ALTERNATIVES.items()]
    return (
        "\n".join(lines)
        + "\n\nTried in turn until one succeeds:\n  "
        + "\n  ".join(tried)
        + f"\n\nExtra mirrors: --mirror URL or {MIRRORS_ENV}=URL,URL"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "pair", nargs="?", help="a pair or a source: " + ", ".join([*PAIR_SOURCES, *all_sources()])
    )
    parser.add_argument("--root", default="data", help="the folder to fill (dataset.root)")
    parser.add_argument("--mirror", action="append", default=[], help="a base URL, tried first")
    parser.add_argument("--list", action="store_true", help="what can be fetched, and from where")
    parser.add_argument("--source", help="the source domain (dataset.source), for domainnet")
    parser.add_argument("--target", help="the target domain (dataset.target), for domainnet")
    args = parser.parse_args()
    if args.list or not args.pair:
        print(listing())
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with reported_as_exit():
        domains = {"source": args.source, "target": args.target}
        for sources in sources_for(args.pair, domains):
            fetch_first(sources, args.root, mirrors=args.mirror)
    chosen = "".join(f" dataset.{k}={v}" for k, v in domains.items() if v)
    print(f"done: python train.py dataset={args.pair} dataset.root={args.root}{chosen}")


if __name__ == "__main__":
    main()
