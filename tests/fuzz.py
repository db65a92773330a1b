"""Coverage-guided fuzzing of the capture-file reader and the frame parser (atheris).

Each input is either a frame batch (parsed by the native core and the
pure-Python reference, which must agree byte for byte, with every frame in
one class) or a whole capture file (read through the native reader, libpcap
over our memory mapping, and through pcapy-ng with the reference parser:
the same records apart from timestamp precision, or the same refusal).
Coverage comes from the reference parser, instrumented by atheris: its
branches mirror the native parser's, so inputs that reach a new case of one
reach it in both.

    python tests/fuzz.py --minutes 30            # a long local run
    python tests/fuzz.py -runs=20000 -seed=1     # what the test suite runs
    python tests/fuzz.py --mutate-corpus DIR --minutes 30   # blind mutation of a
                                                 # corpus, for the sanitizer build
                                                 # (docs/fuzzing.md)

Arguments other than --minutes are libFuzzer's (-runs, -seed, -max_len, a
corpus directory...). Seeds: every capture in tests/corpus and tests/data,
and the hand-built frames of the property tests.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

with atheris.instrument_imports(include=["pt_engine._reference"]):
    from pt_engine import _reference  # noqa: E402

from pt_engine import _core, records  # noqa: E402
from pt_engine.errors import EngineError  # noqa: E402
from pt_engine.sources import FileSource, ReferenceFileSource  # noqa: E402

LINKTYPES = sorted(records.SUPPORTED_LINKTYPES)
MODE_FRAMES, MODE_FILE = 0, 1
MAX_FRAMES = 16
_TMP = Path(tempfile.mkdtemp(prefix="pt-engine-fuzz-"))


class Mismatch(AssertionError):
    """The two backends disagree, or the class totals do not add up."""


def _parse(backend, linktype: int, frames: list[bytes]) -> np.ndarray:
    data = b"".join(frames) or b"\0"
    lens = np.array([len(f) for f in frames], np.uint32)
    offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.uint32)
    out = np.zeros(len(frames), records.RECORD_DTYPE)
    ts = np.arange(len(frames), dtype=np.uint64)
    backend.parse_batch(linktype, data, offsets, lens, lens + 7, ts, 3, out)
    return out


def _reduce(backend, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = records.N_PROTOS * records.N_PORTS
    table = np.zeros((rows, 4), np.uint64)
    classes = np.zeros((4, 2), np.uint64)
    touched = np.zeros(rows, np.uint32)
    state = np.zeros(4, np.uint64)
    backend.reduce_records(out, 0, len(out), records.UINT64_MAX, table, classes, touched, state)
    return table[touched[:int(state[0])]], classes


def check_frames(linktype: int, frames: list[bytes]) -> None:
    native = _parse(_core, linktype, frames)
    reference = _parse(_reference, linktype, frames)
    if native.tobytes() != reference.tobytes():
        raise Mismatch(f"linktype {linktype}: native and reference records differ")
    rows_n, classes_n = _reduce(_core, native)
    rows_r, classes_r = _reduce(_reference, reference)
    if not (np.array_equal(rows_n, rows_r) and np.array_equal(classes_n, classes_r)):
        raise Mismatch("native and reference counters differ")
    if int(classes_n[:, 0].sum()) != len(frames):
        raise Mismatch(f"classes hold {int(classes_n[:, 0].sum())} of {len(frames)} packets")


def _read_all(source_class, path: str):
    """Every record of the file (without timestamps), and the error kind if any."""
    try:
        source = source_class(path, 0, None, "fuzz")
    except EngineError as err:
        return None, type(err).__name__
    chunks = []
    try:
        buf = bytearray(64 * records.RECORD_SIZE)
        while True:
            n, status = source.fill(memoryview(buf))
            chunks.append(np.frombuffer(bytes(buf[:n * records.RECORD_SIZE]),
                                        records.RECORD_DTYPE).copy())
            if status != 0:        # FILL_FULL: go on; anything else ends the file
                break
        failure = type(source.failure()).__name__ if status == 4 else None
    finally:
        source.close()
    out = np.concatenate(chunks)
    out["ts_ns"] = 0              # pcapy-ng reads microseconds; the core, nanoseconds
    return out, failure


def check_file(content: bytes) -> None:
    path = _TMP / "input"
    path.write_bytes(content)
    try:
        native, native_error = _read_all(FileSource, str(path))
    except EngineError:
        return                    # refused (not a capture, unknown link type...): fine
    if native is None:
        return
    if native_error is None:
        classes = _reduce(_core, native)[1]
        if int(classes[:, 0].sum()) != len(native):
            raise Mismatch("file: the classes do not add up")
    reference, _ = _read_all(ReferenceFileSource, str(path))
    if reference is not None and native_error is None and reference.tobytes() != native.tobytes():
        raise Mismatch("file: native and reference records differ")


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 1)
    if mode == MODE_FILE:
        check_file(fdp.ConsumeBytes(fdp.remaining_bytes()))
        return
    linktype = LINKTYPES[fdp.ConsumeIntInRange(0, len(LINKTYPES) - 1)]
    frames = []
    while fdp.remaining_bytes() and len(frames) < MAX_FRAMES:
        frames.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200)))
    if frames:
        check_frames(linktype, frames)


def seeds() -> list[bytes]:
    """Encoded inputs: each corpus capture as a file input, and the property tests'
    hand-built frames as frame inputs."""
    out = []
    for folder in (HERE / "corpus", HERE / "data"):
        for capture in sorted(folder.glob("*.pcap*")):
            if not capture.name.endswith(".json"):
                out.append(_encode_file(capture.read_bytes()))
    import test_fuzz
    for linktype, frames in test_fuzz._seed_frames().items():
        for frame in frames:
            out.append(_encode_frames(linktype, [frame]))
    return out


def _encode_file(content: bytes) -> bytes:
    # FuzzedDataProvider.ConsumeIntInRange(0, 1) takes the last byte.
    return content + bytes([MODE_FILE])


def _encode_frames(linktype: int, frames: list[bytes]) -> bytes:
    # The provider consumes integers from the end and bytes from the front.
    body = b"".join(frames)
    return body + bytes([len(frames[0]) if len(frames) == 1 else 200,
                         LINKTYPES.index(linktype), MODE_FRAMES])


def mutate_corpus(corpus: Path, minutes: float, seed: int) -> int:
    """Without coverage feedback (under gcc's sanitizers): mutate the inputs of a
    corpus grown by a coverage-guided run, at random, for `minutes`. Returns
    the number of inputs run; raises (after writing it to crash-mutated) on the
    first failing one."""
    import random
    import time
    rng = random.Random(seed)
    inputs = [p.read_bytes() for p in sorted(corpus.iterdir()) if p.is_file()]
    deadline = time.monotonic() + minutes * 60
    runs = 0
    while time.monotonic() < deadline:
        data = bytearray(rng.choice(inputs))
        for _ in range(rng.randint(1, 8)):
            what = rng.random()
            at = rng.randrange(len(data) + 1)
            if what < 0.5 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            elif what < 0.7:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            elif what < 0.85 and data:
                del data[at:at + rng.randint(1, 64)]
            else:
                data[at:at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0",
                                              b"\x0c\0\0\0", b"\x00\x00\x01\x00"])
        try:
            one_input(bytes(data))
        except Exception:
            Path("crash-mutated").write_bytes(bytes(data))
            raise
        runs += 1
        if runs % 10000 == 0:
            print(f"#{runs} mutated inputs run", file=sys.stderr, flush=True)
    print(f"Done {runs} mutated inputs from {len(inputs)} in {minutes:g} min", file=sys.stderr)
    return runs


def main(argv: list[str]) -> None:
    args = list(argv)
    if "--mutate-corpus" in args:
        i = args.index("--mutate-corpus")
        minutes = float(args[args.index("--minutes") + 1]) if "--minutes" in args else 1.0
        mutate_corpus(Path(args[i + 1]), minutes, 1)
        return
    if "--minutes" in args:
        i = args.index("--minutes")
        args[i:i + 2] = [f"-max_total_time={int(float(args[i + 1]) * 60)}"]
    corpus = [a for a in args[1:] if not a.startswith("-")]
    if not corpus:
        corpus = [tempfile.mkdtemp(prefix="pt-engine-fuzz-seeds-")]
        args.append(corpus[0])
    seed_dir = Path(corpus[0])
    if not seed_dir.is_file():               # a file is an input to replay, as libFuzzer's
        seed_dir.mkdir(parents=True, exist_ok=True)
    if seed_dir.is_dir() and not any(seed_dir.iterdir()):   # an empty corpus: the seeds
        for i, seed in enumerate(seeds()):
            (seed_dir / f"seed-{i:04d}").write_bytes(seed)
    if not any(a.startswith("-max_len") for a in args):
        args.append("-max_len=65536")
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
