"""The coverage-guided fuzz target (tests/fuzz.py) runs clean for a fixed,
seeded number of inputs: deterministic, about a minute. Longer runs, and the
sanitizer build, are described in docs/fuzzing.md."""
import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parent / "fuzz.py"
RUNS = 15_000


def test_fuzz_target_runs_clean(tmp_path):
    proc = subprocess.run([sys.executable, str(FUZZ), f"-runs={RUNS}", "-seed=1",
                           f"-artifact_prefix={tmp_path}/", str(tmp_path / "corpus")],
                          capture_output=True, timeout=900, cwd=tmp_path)
    log = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, log[-3000:]
    assert f"Done {RUNS} runs" in log, log[-3000:]
    assert not list(tmp_path.glob("crash-*")), log[-3000:]
    assert "INITED" in log and "seed corpus: files:" in log   # the seeds were loaded
