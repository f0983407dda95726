"The configuration: presets, one flag per TrainConfig field with the field's own help, and config files checked by name and type."
import dataclasses

import pytest

from gpt_mini.config import _NOT_FLAGS, TrainConfig, build_parser, config_fields, config_from_args
from gpt_mini.model import GPTConfig


def test_seed_preset_is_the_recipe():
    c = config_from_args(["--preset", "seed"])
    assert c.model_config() == GPTConfig.from_preset("gpt2")
    assert (c.batch_size, c.seq_len, c.steps, c.lr, c.warmup, c.min_lr, c.grad_clip, c.target_loss, c.batch_mode,
            c.log_every) == (8, 256, 5000, 3e-4, 500, 0.0, 1.0, 0.099999, "sequential", 50)
    c = config_from_args(["--preset", "seed", "--target-loss", "none", "--sample-top-k", "none", "--steps", "100",
                          "--warmup", "10", "--no-compile", "--device", "cpu"])
    assert (c.target_loss, c.sample_top_k, c.steps, c.warmup, c.compile, c.device, c.lr) == (None, None, 100, 10, False, "cpu", 3e-4)
    assert config_from_args([]) == TrainConfig.from_preset("small", live_plot=False)


def test_every_config_field_is_a_flag_with_the_fields_own_help():
    actions = {a.dest: a for a in build_parser()._actions}
    fields = [f for f in config_fields() if f[0] not in _NOT_FLAGS]
    assert len(fields) == len(dataclasses.fields(TrainConfig)) - len(_NOT_FLAGS)
    for name, _kind, _optional, doc in fields:
        assert name in actions, name
        assert doc and actions[name].help.startswith(doc.replace("%", "%%")), (name, actions[name].help, doc)
        assert "--" + name.replace("_", "-") in actions[name].option_strings


@pytest.mark.parametrize("content,fragment", [
    ('{"stpes": 5}', "unknown field 'stpes'"),
    ('{"steps": "5"}', "steps='5' should be int"),
    ('{"compile": 1}', "compile=1 should be bool"),
    ('{"lr": true}', "lr=True should be float"),
    ("[1, 2]", "should hold an object"),
    ("{", "is not valid JSON"),
])
def test_bad_config_files_are_named(tmp_path, capsys, content, fragment):
    path = tmp_path/"cfg.json"; path.write_text(content)
    with pytest.raises(SystemExit) as e: config_from_args(["--config", str(path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert fragment in err and str(path) in err


def test_min_lr_follows_the_peak_unless_given():
    "`--lr 5e-5` alone trains (the floor is a tenth of the peak); an explicit floor above the peak is still refused."
    from gpt_mini.config import config_from_args
    cfg = config_from_args(["--lr", "5e-5"])
    assert cfg.min_lr is None and cfg.floor_lr == pytest.approx(5e-6)
    assert config_from_args([]).floor_lr == pytest.approx(1e-4)  # the small preset's floor, as before
    assert config_from_args(["--lr", "5e-5", "--min-lr", "1e-6"]).floor_lr == 1e-6
    with pytest.raises(SystemExit) as e: config_from_args(["--lr", "5e-5", "--min-lr", "1e-4"])
    assert e.value.code == 2
