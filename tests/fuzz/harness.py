"""Shared set-up of the atheris harnesses: the seed corpus on disk, then libFuzzer on a target.

``python tests/fuzz/fuzz_codec.py [libFuzzer flags]`` runs from the repository root or anywhere;
without a corpus directory among the arguments it uses ``build/fuzz/<name>/``, first filled with the
seeds (:func:`tests.fuzz.targets.codec_seeds`, ``api_seeds``), so that a run starts from valid
messages and objects and keeps what it finds interesting for the next run.  Crashes (a
:class:`~tests.fuzz.targets.Finding` or any unexpected exception) are written by libFuzzer as
``build/fuzz/<name>-crash-<sha1>``; its words (wire names, JSON and patch tokens) go into
``build/fuzz/<name>.dict``, libFuzzer's dictionary.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(
    name: str, target: Callable[[bytes], None], seeds: Callable[[], list[bytes]], words: Callable[[], list[str]]
) -> None:
    """Fuzz ``target`` with libFuzzer's flags from ``sys.argv`` (e.g. ``-max_total_time=60``).

    ``words`` (wire names, JSON tokens) become a libFuzzer dictionary unless ``-dict=`` is given."""
    import atheris  # the `fuzz` extra: pip install -e '.[fuzz]'

    args = list(sys.argv)
    out = ROOT / "build" / "fuzz"
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = out / name
        corpus.mkdir(parents=True, exist_ok=True)
        for seed in seeds():
            (corpus / f"seed-{hashlib.sha1(seed).hexdigest()[:16]}").write_bytes(seed)
        args.append(str(corpus))
    if not any(a.startswith("-dict=") for a in args):
        out.mkdir(parents=True, exist_ok=True)
        dictionary = out / f"{name}.dict"
        dictionary.write_text("".join(f"{json.dumps(w)}\n" for w in sorted(set(words()))))
        args.insert(1, f"-dict={dictionary}")
    if not any(a.startswith("-artifact_prefix=") for a in args):
        out.mkdir(parents=True, exist_ok=True)
        args.insert(1, f"-artifact_prefix={out}/{name}-")  # crash-<sha1> files beside the corpus
    atheris.Setup(args, target)
    atheris.Fuzz()


def instrumented(import_targets: Callable[[], None]) -> None:
    """Import tmcd (and the targets) with atheris' coverage instrumentation."""
    import atheris

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["tmcd", "msgspec"]):
        import_targets()
