import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent/"shared"

# Tests never touch the network: the corpus and tokenizer files come from ../shared when the caller has not set them.
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED/"tiktoken_cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

@pytest.fixture
def corpus() -> Path:
    p = Path(os.environ.get("GPT_MINI_DATA") or SHARED/"data"/"tinyshakespeare.txt")
    if not p.is_file(): pytest.skip("tiny Shakespeare is not available here (set GPT_MINI_DATA)")
    return p

@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    "A private, empty cache folder for this test."
    d = tmp_path/"cache"
    monkeypatch.setenv("GPT_MINI_CACHE", str(d))
    return d
