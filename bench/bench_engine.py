"""Throughput of chunkq's strategies, measured side by side in one run.

Reads a corpus (default: this Python's standard library ``.py`` files), then times,
on the same texts in memory: a bare split on blank lines (the floor), each strategy's
``split``, token counting of the chunks, and the whole per-document path
(``chunk_document``: split, count, hash). Prints MB/s and the ratio to the bare split.
Not part of the test suite; numbers depend on the machine.

    python bench/bench_engine.py [FOLDER] [--chunk-size 1000] [--overlap 200]
"""

from __future__ import annotations

import argparse
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from tasks import engine
from tasks.errors import DocumentError
from tasks.models import ChunkRequest
from tasks.pipeline import chunk_document
from tasks.sources import FolderSource
from tasks.tokens import count_tokens

MB = 1_000_000


def _load(root: Path) -> dict[str, str]:
    source = FolderSource(
        root=root,
        include=("*.py", "*.md", "*.txt", "*.rst"),
        exclude=("site-packages",),
    )
    texts = {}
    for document_id in source.list_ids():
        try:
            texts[document_id] = source.read_text(document_id)
        except DocumentError:
            continue
    return texts


def _time_s(work: Callable[[], object], repeats: int = 3) -> float:
    best_s = float("inf")
    for _ in range(repeats):
        started_s = time.perf_counter()
        work()
        best_s = min(best_s, time.perf_counter() - started_s)
    return best_s


def main() -> None:
    """Run the benchmark and print one line per measured path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=sysconfig.get_path("stdlib"))
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--overlap", type=int, default=200)
    arguments = parser.parse_args()
    texts = list(_load(Path(arguments.folder)).values())
    megabytes = sum(len(text.encode()) for text in texts) / MB
    print(f"corpus: {len(texts)} documents, {megabytes:.1f} MB from {arguments.folder}")

    floor_s = _time_s(lambda: [text.split("\n\n") for text in texts])
    rows: list[tuple[str, float]] = [("bare split on blank lines", floor_s)]
    for strategy in engine.Strategy:
        size = 256 if strategy is engine.Strategy.TOKENS else arguments.chunk_size
        overlap = 32 if strategy is engine.Strategy.TOKENS else arguments.overlap
        spec = engine.ChunkSpec(strategy, size, overlap)
        repeats = 1 if strategy is engine.Strategy.TOKENS else 3
        rows.append(
            (
                f"split {strategy.value} ({size}/{overlap})",
                _time_s(
                    lambda spec=spec: [engine.split(t, spec) for t in texts], repeats
                ),
            )
        )
    recursive = engine.ChunkSpec(
        engine.Strategy.RECURSIVE, arguments.chunk_size, arguments.overlap
    )
    pieces = [t[a:b] for t in texts for a, b in engine.split(t, recursive)]
    rows.append(
        (
            "count_tokens of recursive chunks",
            _time_s(lambda: [count_tokens(p) for p in pieces], 1),
        )
    )
    request = ChunkRequest(
        source_root=Path(arguments.folder),
        chunk_size=arguments.chunk_size,
        overlap=arguments.overlap,
    )
    rows.append(
        (
            "chunk_document (split+tokens+sha256)",
            _time_s(
                lambda: [
                    chunk_document(t, document_id="d", request=request) for t in texts
                ],
                1,
            ),
        )
    )

    for name, seconds in rows:
        print(
            f"{name:<40} {megabytes / seconds:8.1f} MB/s   x{floor_s / seconds:7.3f} of floor"
        )


if __name__ == "__main__":
    main()
