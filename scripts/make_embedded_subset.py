"""Make the Fashion-MNIST subset shipped in ``src/ssconv/data/embedded`` (the ``embedded`` dataset).

Reads the four IDX files of Fashion-MNIST (Xiao, Rasul, Vollgraf, arXiv:1708.07747) from the
Debian package ``dataset-fashion-mnist`` (or ``--source``), draws a seeded, class-balanced sample
(500 images per class from the training split, 100 per class from the official test split),
keeps the sampled images in their original order, and writes them in the original format
(IDX, gzip) with the licence and a README. The output is byte-for-byte reproducible.

    python scripts/make_embedded_subset.py            # (re)write the subset
    python scripts/make_embedded_subset.py --check    # verify the committed files
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np

from ssconv.data.fashion_mnist import debian_fashion_mnist_dir, load_fashion_mnist_arrays
from ssconv.data.idx import write_idx

SEED = 0
PER_CLASS = {True: 500, False: 100}  # train split, test split
PREFIX = {True: "train", False: "t10k"}
OUT = Path(__file__).resolve().parents[1] / "src" / "ssconv" / "data" / "embedded"

LICENSE = """\
The embedded dataset is a subset of Fashion-MNIST,
https://github.com/zalandoresearch/fashion-mnist, distributed under the MIT License:

The MIT License (MIT) Copyright © [2017] Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software \
and associated documentation files (the “Software”), to deal in the Software without \
restriction, including without limitation the rights to use, copy, modify, merge, publish, \
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the \
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or \
substantial portions of the Software.

THE SOFTWARE IS PROVIDED “AS IS”, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING \
BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND \
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, \
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, \
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

README = """\
# Embedded Fashion-MNIST subset

The `embedded` dataset of ssconv (`ssconv.data.build_dataset("embedded", train=...)`): a small,
fixed, class-balanced subset of **Fashion-MNIST** by Zalando SE
(https://github.com/zalandoresearch/fashion-mnist), shipped so that the demo and the tests run
without a download. Licence: MIT, see `LICENSE` in this folder.

> Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset for
> Benchmarking Machine Learning Algorithms. arXiv:1708.07747, 2017.

## How it was made

`scripts/make_embedded_subset.py` (seed {seed}) read the original IDX files of the Debian
package `dataset-fashion-mnist`, drew {train_per} images per class at random (numpy
`default_rng({seed})`, class by class, without replacement) from the 60,000 training images and
{test_per} per class from the 10,000 images of the official test split, kept them in their
original order, and wrote them unchanged in the original format (IDX, gzip). Images are 28x28
grey, labels 0-9 (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag,
Ankle boot).

| file | items | sha256 of the decompressed IDX data |
| --- | --- | --- |
{rows}
"""


def sample(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``per_class`` items of each class, drawn without replacement."""
    chosen = []
    for c in range(10):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            sys.exit(f"class {c} has only {len(members)} items, need {per_class}")
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def subset(source: Path) -> dict[str, np.ndarray]:
    """The subset's arrays by file name, drawn from the IDX files in ``source``."""
    rng = np.random.default_rng(SEED)
    arrays = {}
    for train in (True, False):
        images, labels = load_fashion_mnist_arrays(source, train=train)
        keep = sample(labels, PER_CLASS[train], rng)
        arrays[f"{PREFIX[train]}-images-idx3-ubyte.gz"] = images[keep]
        arrays[f"{PREFIX[train]}-labels-idx1-ubyte.gz"] = labels[keep]
    return arrays


def make(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, array in subset(source).items():
        write_idx(out / name, array)
        digest = hashlib.sha256(gzip.decompress((out / name).read_bytes())).hexdigest()
        rows.append(f"| `{name}` | {len(array)} | `{digest}` |")
    (out / "LICENSE").write_text(LICENSE, encoding="utf-8")
    (out / "README.md").write_text(
        README.format(
            seed=SEED,
            train_per=PER_CLASS[True],
            test_per=PER_CLASS[False],
            rows="\n".join(rows),
        ),
        encoding="utf-8",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="folder of the four Fashion-MNIST IDX files")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--check", action="store_true", help="rebuild in a temporary folder and compare with --out"
    )
    args = parser.parse_args()
    source = args.source or debian_fashion_mnist_dir()
    if source is None:
        print("Fashion-MNIST not found: install dataset-fashion-mnist or pass --source")
        return 1
    if not args.check:
        make(source, args.out)
        for f in sorted(args.out.iterdir()):
            print(f"{f}  {f.stat().st_size:,} bytes")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        make(source, Path(tmp))
        names = sorted(p.name for p in Path(tmp).iterdir())
        differ = [n for n in names if _read(Path(tmp) / n) != _read(args.out / n)]
    if differ:
        print(f"differ from a fresh build: {', '.join(differ)}")
        return 1
    print(f"{args.out}: {len(names)} files match a fresh build")
    return 0


def _read(path: Path) -> bytes | None:
    """A file's content, decompressed for .gz (zlib versions may compress differently)."""
    if not path.is_file():
        return None
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


if __name__ == "__main__":
    sys.exit(main())
