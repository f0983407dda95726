"""Figures as a reader sees them: executed in a real, fresh Jupyter kernel (no MPLBACKEND, pyplot never imported), every
kind of figure the library returns must reach the front end as an image/png, not as the text `<Figure size ...>`."""
import os
import queue

import pytest

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

FIGURES = {
    "schedule": "from gpt_mini.schedule import schedule_figure\nschedule_figure()",
    "loss": "from gpt_mini.run import loss_figure\n"
            "loss_figure({'step': [0, 1, 2], 'loss': [10.8, 9.0, 7.5], 'eval_step': [2], 'eval_train': [7.4], 'eval_val': [7.6]},"
            " 'a run', baselines={'unigram': 6.5})",
    "sampling": "import torch\nfrom gpt_mini.sampling import plot_knobs\n"
                "plot_knobs(torch.linspace(3, -3, 50257), [{}, {'temperature': 0.5}, {'top_k': 5}])",
}


@pytest.fixture(scope="module")
def kernel():
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # a fresh Jupyter kernel picks its own backend
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3", env=env)
    yield kc
    kc.stop_channels(); km.shutdown_kernel(now=True)


def run(kc, code: str, timeout: float = 120) -> list[dict]:
    "The output messages (execute_result, display_data, stream, error) of one cell."
    msg_id, outputs = kc.execute(code), []
    while True:
        try: msg = kc.get_iopub_msg(timeout=timeout)
        except queue.Empty: raise TimeoutError(f"no reply to {code!r}") from None
        if msg["parent_header"].get("msg_id") != msg_id: continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle": return outputs
        if msg["msg_type"] in ("execute_result", "display_data", "stream", "error"): outputs.append(msg)


@pytest.mark.parametrize("name", FIGURES)
def test_a_figure_shows_as_an_image_in_a_fresh_kernel(kernel, name):
    outputs = run(kernel, FIGURES[name])
    assert not [o for o in outputs if o["msg_type"] == "error"], outputs
    images = [o for o in outputs if o["msg_type"] in ("execute_result", "display_data") and "image/png" in o["content"]["data"]]
    assert images, [o["content"].get("data", o["content"]).keys() for o in outputs]
    # and pyplot was never what made it show
    assert run(kernel, "import sys; print('matplotlib.pyplot' in sys.modules)")[0]["content"]["text"].strip() == "False"
