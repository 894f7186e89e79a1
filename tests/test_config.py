"""pipeline.config: defaults, YAML files, --set overrides and their errors."""

import re
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import Config, ConfigError, dump_config, load_config, parse_override

REPO = Path(__file__).resolve().parents[1]
DEFAULT_YAML = REPO / "configs" / "default.yaml"


def _error(path=None, overrides=()) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def _yaml(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_load():
    config = load_config(None)
    assert config.to_dict() == Config().to_dict()
    assert config.train.epochs == 15
    assert config.train.w_con == 50.0
    assert config.preprocess.isize == 64
    assert config.data.source == "synthetic:valve-seats"


@pytest.mark.parametrize("name", ["default.yaml", "mvtec.yaml", "mnist.yaml"])
def test_the_shipped_configs_load_with_every_value_they_set(name):
    path = DEFAULT_YAML.with_name(name)
    config = load_config(path).to_dict()
    for section, values in yaml.safe_load(path.read_text()).items():
        for key, value in values.items():
            assert config[section][key] == value, f"{section}.{key}"


def test_yaml_file_overrides_defaults_and_keeps_the_rest(tmp_path):
    path = _yaml(tmp_path, "train:\n  epochs: 3\n  lr: 0.001\npreprocess:\n  isize: 32\n")
    config = load_config(path)
    assert config.train.epochs == 3
    assert config.train.lr == 0.001
    assert config.preprocess.isize == 32
    assert config.train.batch_size == Config().train.batch_size
    assert config.model == Config().model


def test_empty_yaml_file_gives_the_defaults(tmp_path):
    assert load_config(_yaml(tmp_path, "")).to_dict() == Config().to_dict()


def test_set_overrides_are_parsed_as_yaml_and_win_over_the_file(tmp_path):
    path = _yaml(tmp_path, "train:\n  epochs: 3\n")
    config = load_config(
        path,
        [
            "train.epochs=5",
            "train.lr=1",  # an int is accepted for a float ...
            "train.augment=true",
            "data.source=synthetic:valve-seats",
            "preprocess.roi_box=[0.1, 0.2, 0.9, 0.8]",
        ],
    )
    assert config.train.epochs == 5 and type(config.train.epochs) is int
    assert config.train.lr == 1.0 and type(config.train.lr) is float  # ... and made a float
    assert config.train.augment is True
    assert config.data.source == "synthetic:valve-seats"
    assert config.preprocess.roi_box == [0.1, 0.2, 0.9, 0.8]


def test_parse_override():
    assert parse_override("train.epochs=3") == ("train.epochs", 3)
    assert parse_override("train.epochs='3'") == ("train.epochs", "3")
    assert parse_override("data.name=") == ("data.name", "")
    assert parse_override("data.source=a=b") == ("data.source", "a=b")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.epochs")


@pytest.mark.parametrize(
    "override, names",
    [
        ("foo.bar=1", "'foo.bar'"),  # unknown section
        ("train.epoch=3", "'train.epoch'"),  # unknown key
        ("epochs=3", "'epochs'"),  # no section
        ("train=3", "'train'"),
        ("train.epochs='3'", "train.epochs"),  # a string for an int
        ("train.epochs=abc", "train.epochs"),
        ("train.epochs=3.5", "train.epochs"),  # a float for an int
        ("train.epochs=true", "train.epochs"),  # a bool is not an int
        ("train.lr=true", "train.lr"),
        ("train.augment=1", "train.augment"),
        ("data.name=3", "data.name"),  # YAML reads 3 as an int
        ("score.kind=foo", "score.kind"),  # bad choice
        ("preprocess.isize=40", "preprocess.isize"),  # not a multiple of 16
        ("preprocess.isize=16", "preprocess.isize"),
        ("preprocess.channels=2", "preprocess.channels"),
        ("preprocess.channels=colour", "preprocess.channels: 'colour' is not 1, 3 or auto"),
        ("preprocess.channels=true", "preprocess.channels: expected int or str"),
        ("threshold.quantile=1.5", "threshold.quantile"),
    ],
)
def test_bad_overrides_raise_one_line_naming_the_key(override, names):
    message = _error(None, [override])
    assert names in message


def test_bad_choice_and_isize_messages_quote_the_value():
    assert "'foo'" in _error(None, ["score.kind=foo"])
    assert "40" in _error(None, ["preprocess.isize=40"])
    assert "3.5" in _error(None, ["train.epochs=3.5"])


@pytest.mark.parametrize("source", ["set", "file"])
def test_exponent_floats_are_floats(tmp_path, source):
    if source == "set":
        config = load_config(None, ["train.lr=2e-4"])
    else:
        config = load_config(_yaml(tmp_path, "train:\n  lr: 2e-4\n"))
    assert config.train.lr == pytest.approx(2e-4)


def test_errors_in_the_yaml_file_name_the_key(tmp_path):
    assert "'train.epoch'" in _error(_yaml(tmp_path, "train:\n  epoch: 3\n"))
    assert "'nope.x'" in _error(_yaml(tmp_path, "nope:\n  x: 1\n"))
    assert "score.kind" in _error(_yaml(tmp_path, "score:\n  kind: foo\n"))
    assert "preprocess.isize" in _error(_yaml(tmp_path, "preprocess:\n  isize: 40\n"))


def test_badly_shaped_yaml_file_names_the_file(tmp_path):
    path = _yaml(tmp_path, "train: 3\n")
    message = _error(path)
    assert str(path) in message and "'train'" in message
    path = _yaml(tmp_path, "- a\n- b\n", "list.yaml")
    assert str(path) in _error(path)


def test_invalid_yaml_names_the_file(tmp_path):
    path = _yaml(tmp_path, "train:\n  epochs: [1, 2\n")
    message = _error(path)
    assert message.startswith(f"{path}: ")
    assert "YAML" in message


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.yaml"
    message = _error(path)
    assert message.startswith(f"{path}: ")


def test_experiment_name(tmp_path):
    assert load_config(None).experiment_name() == "synthetic-valve-seats"
    named = load_config(None, ["data.name=bottles"])
    assert named.experiment_name() == "bottles"
    from_path = load_config(None, [f"data.source={tmp_path / 'mvtec' / 'bottle'}/"])
    assert from_path.experiment_name() == "bottle"
    # an existing folder whose name has a colon is a path, not a synthetic source
    odd = tmp_path / "run:1"
    odd.mkdir()
    assert load_config(None, [f"data.source={odd}"]).experiment_name() == "run:1"


def test_digest_changes_with_the_config():
    base = load_config(None)
    assert base.digest() == load_config(None).digest()
    for sections in (None, ["train"], ["data", "preprocess"]):
        assert re.fullmatch(r"[0-9a-f]{12}", base.digest(sections)), sections
    # the sections picked matter, not only the values
    assert base.digest(["train"]) != base.digest(["data"]) != base.digest()
    changed = load_config(None, ["train.epochs=2"])
    assert changed.digest() != base.digest()
    # a value in a digested section changes the digest ...
    assert changed.digest(["train"]) != base.digest(["train"])
    assert changed.digest(["model", "train"]) != base.digest(["model", "train"])
    # ... one outside the given sections does not
    assert changed.digest(["data", "preprocess"]) == base.digest(["data", "preprocess"])
    scored = load_config(None, ["score.pixel_norm=false"])
    assert scored.digest(["score"]) != base.digest(["score"])
    assert scored.digest(["data", "preprocess", "model", "train"]) == base.digest(
        ["data", "preprocess", "model", "train"]
    )


def test_flat_and_dump_round_trip(tmp_path):
    config = load_config(None, ["train.epochs=2", "score.kind=combined"])
    flat = config.flat()
    assert flat["train.epochs"] == 2 and flat["score.kind"] == "combined"
    path = _yaml(tmp_path, dump_config(config), "dumped.yaml")
    assert load_config(path).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "override, quoted",
    [
        ("train.on_nan=retry", "train.on_nan: 'retry' is not one of"),
        ("train.lr_schedule=linear", "train.lr_schedule: 'linear' is not one of"),
        ("train.strategy=tpu", "train.strategy: 'tpu' is not one of"),
        ("train.cache=disk", "train.cache: 'disk' is not one of"),
        ("train.patience=-1", "train.patience: -1 is negative"),
        ("train.nan_restores=-2", "train.nan_restores: -2 is negative"),
        ("train.checkpoint_every_steps=-5", "train.checkpoint_every_steps: -5 is negative"),
        ("train.worker_timeout_s=0", "train.worker_timeout_s: 0.0 is not positive"),
        ("train.mixed_precision=maybe", "train.mixed_precision: 'maybe' is not false, float16"),
        ("train.mixed_precision=4", "train.mixed_precision: expected bool or str, got int 4"),
        ("train.synthetic_anomalies=1.5", "train.synthetic_anomalies: 1.5 is not in [0, 1]"),
        ("model.defect_head=true", "model.defect_head: true learns from synthetic anomalies"),
        ("score.kind=head", "score.kind: 'head' reads the defect head"),
        ("score.kind=head_residual", "score.kind: 'head_residual' reads the defect head"),
        ("model.head_filters=0", "model.head_filters must be positive, got 0"),
    ],
)
def test_bad_training_settings_quote_the_value(override, quoted):
    assert quoted in _error(None, [override])


def test_training_settings_default_to_a_plain_single_process_run():
    train = load_config(None).train
    assert (train.on_nan, train.strategy, train.cache) == ("stop", "default", "auto")
    assert (train.patience, train.checkpoint_every_steps, train.mixed_precision) == (0, 0, False)
    assert train.lr_schedule == "constant"


def test_channels_take_a_number_or_auto():
    assert load_config(None, ["preprocess.channels=auto"]).preprocess.channels == "auto"
    assert load_config(None, ["preprocess.channels=3"]).preprocess.channels == 3
