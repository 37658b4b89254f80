"""Run `stats` (Network construction + cost summary, no weights) on every cfg of a folder and tally the
blocking error per cfg: python tools/darknet_cfgs.py /work/shared/data/cfg/alexeyab"""
from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

from dncompress.errors import DncompressError
from dncompress.model_io import open_model
from dncompress.stats import summary


def main(folder: str) -> None:
    ok, errors = [], {}
    for path in sorted(Path(folder).glob("*.cfg")):
        try:
            summary(open_model(path, load_weights=False, max_activation_mb=1e9))
            ok.append(path.name)
        except DncompressError as err:
            errors[path.name] = str(err)
    for name, message in errors.items():
        print(f"{name}: {message}")
    tally = collections.Counter(re.sub(r"line \d+|layer \d+|\d+", "N", m.split(": ", 2)[-1])[:90]
                                for m in errors.values())
    for message, count in tally.most_common():
        print(f"{count:3d}  {message}")
    print(f"{len(ok)} of {len(ok) + len(errors)} work")


if __name__ == "__main__":
    main(sys.argv[1])
