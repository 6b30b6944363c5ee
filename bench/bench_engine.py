"""Throughput of chunkq's strategies, measured side by side in one run.

Reads a corpus (default: this Python's standard library ``.py`` files), then times,
on the same texts in memory: a bare split on blank lines (the floor), each strategy's
``split``, token counting of the chunks, and the whole per-document path
(``chunk_document``: split, count, hash). Prints MB/s and the ratio to the bare split.

Then the pathological texts (a 2 MB and a 5 MB single line of ``x`` with
``recursive``; 20 MB of prose with ``recursive``, ``markdown`` and ``tokens``): the
splitter called on the whole text, as the engine did before it cut texts into
segments, side by side with :func:`tasks.engine.split`, which does; it prints seconds
and their ratio. The unsegmented calls take minutes; ``--skip-unsegmented`` leaves
them out, ``--pathological-only`` the corpus. Not part of the test suite; numbers
depend on the machine.

    python bench/bench_engine.py [FOLDER] [--chunk-size 1000] [--overlap 200]
        [--skip-unsegmented] [--pathological-only]
"""

from __future__ import annotations

import argparse
import functools
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import semantic_text_splitter as sts

from tasks import engine
from tasks.errors import DocumentError
from tasks.models import ChunkRequest
from tasks.pipeline import chunk_document
from tasks.sources import FolderSource
from tasks.tokens import count_tokens

MB = 1_000_000

PROSE_PARAGRAPH = (
    "The quick brown fox jumps over the lazy dog, and the dog, not amused, "
    "says nothing at all. Then it rains. "
) * 8 + "\n\n"


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


def _split_all(texts: list[str], spec: engine.ChunkSpec) -> list[list[engine.Span]]:
    return [engine.split(text, spec) for text in texts]


def _time_s(work: Callable[[], object], repeats: int = 3) -> float:
    best_s = float("inf")
    for _ in range(repeats):
        started_s = time.perf_counter()
        work()
        best_s = min(best_s, time.perf_counter() - started_s)
    return best_s


def _pathological_cases() -> list[tuple[str, engine.Strategy, str]]:
    prose = PROSE_PARAGRAPH * (20 * MB // len(PROSE_PARAGRAPH) + 1)
    prose = prose[: 20 * MB]
    return [
        ("2 MB single line of 'x'", engine.Strategy.RECURSIVE, "x" * (2 * MB)),
        ("5 MB single line of 'x'", engine.Strategy.RECURSIVE, "x" * (5 * MB)),
        ("20 MB of prose", engine.Strategy.RECURSIVE, prose),
        ("20 MB of prose", engine.Strategy.MARKDOWN, prose),
        ("20 MB of prose", engine.Strategy.TOKENS, prose),
    ]


def _unsegmented(text: str, spec: engine.ChunkSpec) -> int:
    """Split ``text`` in one splitter call, as the engine did before segments.

    The engine's trim of each chunk is left out, which favours this path slightly.
    """
    splitter: sts.TextSplitter | sts.MarkdownSplitter
    if spec.strategy == engine.Strategy.TOKENS:
        splitter = sts.TextSplitter.from_tiktoken_model(
            engine.TOKEN_MODEL, spec.chunk_size, overlap=spec.overlap
        )
    elif spec.strategy == engine.Strategy.MARKDOWN:
        splitter = sts.MarkdownSplitter(spec.chunk_size, overlap=spec.overlap)
    else:
        splitter = sts.TextSplitter(spec.chunk_size, overlap=spec.overlap)
    return len(splitter.chunk_indices(text))


def _bench_pathological(
    chunk_size: int, overlap: int, *, skip_unsegmented: bool
) -> None:
    """Time each pathological case unsegmented and segmented; print seconds, ratio."""
    print("pathological texts: seconds for one split, unsegmented against segmented")
    print(
        f"{'text':<26} {'strategy':<20} {'unsegmented':>12} {'segmented':>10} {'ratio':>8}"
    )
    for name, strategy, text in _pathological_cases():
        tokens = strategy is engine.Strategy.TOKENS
        spec = engine.ChunkSpec(
            strategy, 256 if tokens else chunk_size, 32 if tokens else overlap
        )
        label = f"{strategy.value} {spec.chunk_size}/{spec.overlap}"
        segmented_s = _time_s(functools.partial(engine.split, text, spec), 1)
        if skip_unsegmented:
            print(f"{name:<26} {label:<20} {'-':>12} {segmented_s:9.2f}s {'-':>8}")
            continue
        unsegmented_s = _time_s(functools.partial(_unsegmented, text, spec), 1)
        ratio = unsegmented_s / segmented_s
        print(
            f"{name:<26} {label:<20} {unsegmented_s:11.2f}s {segmented_s:9.2f}s"
            f" {ratio:7.1f}x"
        )
    print(
        f"segments: at most {engine.SEGMENT_CHUNKS} chunks, between "
        f"{engine.SEGMENT_MIN_CHARS} and {engine.SEGMENT_MAX_CHARS} characters"
    )


def main() -> None:
    """Run the benchmark and print one line per measured path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=sysconfig.get_path("stdlib"))
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--overlap", type=int, default=200)
    parser.add_argument("--skip-unsegmented", action="store_true")
    parser.add_argument("--pathological-only", action="store_true")
    arguments = parser.parse_args()
    if not arguments.pathological_only:
        _bench_corpus(arguments)
    _bench_pathological(
        arguments.chunk_size,
        arguments.overlap,
        skip_unsegmented=arguments.skip_unsegmented,
    )


def _bench_corpus(arguments: argparse.Namespace) -> None:
    """Time every path on the corpus and print MB/s and the ratio to the floor."""
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
                _time_s(functools.partial(_split_all, texts, spec), repeats),
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
