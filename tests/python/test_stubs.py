"""The committed type stubs describe the extension that is actually built."""
import subprocess
import sys
from pathlib import Path

import pytest

import llm4dsr

STUB = Path(__file__).resolve().parents[2] / "python" / "llm4dsr" / "_llm4dsr.pyi"


def test_committed_stub_is_current(tmp_path):
    pytest.importorskip("pybind11_stubgen")
    out = subprocess.run([sys.executable, "-m", "pybind11_stubgen", "llm4dsr._llm4dsr", "-o", str(tmp_path),
                          "--numpy-array-wrap-with-annotated"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    fresh = (tmp_path / "llm4dsr" / "_llm4dsr.pyi").read_text(encoding="utf-8")
    assert STUB.read_text(encoding="utf-8") == fresh, "stale stub: run scripts/gen_stubs and commit the result"


def test_every_public_name_is_stubbed():
    text = STUB.read_text(encoding="utf-8")
    public = [n for n in dir(llm4dsr._llm4dsr) if not n.startswith("_")]
    missing = [n for n in public if f"class {n}" not in text and f"def {n}(" not in text and f"{n}:" not in text]
    assert not missing, missing
