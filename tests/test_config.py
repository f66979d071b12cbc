import pytest

from sddkd.config import (
    ConfigError,
    DKDMethod,
    KDMethod,
    apply_override,
    config_hash,
    list_presets,
    load_config,
    resolve_preset,
)
from sddkd.rundir.naming import run_name


@pytest.mark.parametrize("name", list_presets())
def test_every_shipped_preset_validates_and_opens_with_its_command(name):
    cfg = load_config(name)
    header = resolve_preset(name).read_text().splitlines()[:6]
    assert header[0].startswith("# "), "a preset opens with a comment saying what it reproduces"
    assert any(line.startswith("# Run: ") and "sddkd train" in line for line in header)
    assert cfg.method.name in name


def test_preset_families_are_complete():
    names = set(list_presets())
    pairs = ["res32x4_res8x4", "res32x4_shuv1", "res32x4_mv2", "wrn40_2_shuv1", "wrn40_2_vgg8", "wrn40_2_mv2",
             "wrn40_2_wrn16_2"]  # fmt: skip
    for pair in pairs:
        for method in ("sdd_kd_lskd", "kd", "kd_lskd", "sdd_kd", "dkd", "dkd_lskd", "sdd_dkd", "sdd_dkd_lskd"):
            assert f"cifar100/{method}/{pair}" in names
    for pair in ["res32x4_res8x4", "res32x4_shuv1", "res32x4_mv2", "wrn40_2_shuv1"]:
        assert f"cub200/sdd_kd_lskd/{pair}" in names
    assert {"imagenet/sdd_kd_lskd/res34_res18", "imagenet/sdd_kd_lskd/res50_mv1"} <= names
    assert {"cub200/vanilla/wrn_40_2", "cifar100/vanilla/resnet32x4", "synthetic/vanilla/resnet20"} <= names


def test_main_method_hyper_parameters_follow_the_spec():
    cfg = load_config("res32x4_res8x4")
    assert isinstance(cfg.method, KDMethod) and cfg.method.name == "sdd_kd_lskd"
    assert (cfg.method.temperature, cfg.method.ce_weight, cfg.method.kd_weight) == (2.0, 1.0, 9.0)
    assert cfg.method.standardize and cfg.method.multi_scale and cfg.method.complementary_weight == 2.0
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.grad_clip) == (0.05, 64, 240, 40.0)
    assert cfg.optim.lr_decay_epochs == (150, 180, 210)
    assert load_config("res32x4_shuv1").optim.lr == 0.01  # ShuffleNet / MobileNet students use 0.01
    assert load_config("res32x4_mv2").optim.lr == 0.01
    dkd = load_config("cifar100/dkd/res32x4_res8x4").method
    assert isinstance(dkd, DKDMethod) and (dkd.alpha, dkd.beta, dkd.temperature, dkd.warmup) == (1.0, 8.0, 4.0, 20)


def test_short_names_resolve():
    assert resolve_preset("res32x4_res8x4").as_posix().endswith("cifar100/sdd_kd_lskd/res32x4_res8x4.yaml")
    assert resolve_preset("kd/res32x4_res8x4").as_posix().endswith("cifar100/kd/res32x4_res8x4.yaml")
    assert resolve_preset("resnet32x4").as_posix().endswith("cifar100/vanilla/resnet32x4.yaml")


def test_scales_override_and_run_name():
    cfg = load_config("res32x4_res8x4", scales="[1, 2]", overrides=["seed=3"])
    assert cfg.scales == (1, 2)
    assert run_name(cfg) == "cifar100-sdd_kd_lskd-resnet32x4_resnet8x4-M1-2-s3"
    assert run_name(load_config("resnet32x4")) == "cifar100-vanilla-resnet32x4-s0"


def test_config_hash_tracks_the_recipe_not_the_engine():
    base = load_config("res32x4_res8x4")
    assert config_hash(base) == config_hash(load_config("res32x4_res8x4", overrides=["engine.device=cpu"]))
    assert config_hash(base) == config_hash(load_config("res32x4_res8x4", overrides=["data.root=/elsewhere"]))
    assert config_hash(base) != config_hash(load_config("res32x4_res8x4", overrides=["optim.lr=0.1"]))
    assert config_hash(base) != config_hash(load_config("res32x4_res8x4", scales="1,2"))
    assert len(config_hash(base)) == 12


def test_synthetic_swap_keeps_shape_and_class_count():
    cfg = load_config("res32x4_res8x4", dataset="synthetic")
    assert cfg.data.name == "synthetic" and cfg.data.num_classes == 100 and cfg.data.synthetic.image_size == 32
    cub = load_config("cub200/sdd_kd_lskd/res32x4_res8x4", dataset="synthetic")
    assert cub.data.num_classes == 200 and cub.data.synthetic.image_size == 224


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(overrides=["optim.lrr=0.1"]), "unknown key 'optim.lrr' (allowed: batch_size"),
        (dict(overrides=["method.temprature=3"]), "unknown key 'method.temprature'"),
        (dict(overrides=["method.alpha=1"]), "unknown key 'method.alpha'"),  # a DKD knob in a KD recipe
        (dict(overrides=["optim.lr=fast"]), "optim.lr: Input should be a valid number"),
        (dict(overrides=["method.name=fancy_kd"]), "unknown method 'fancy_kd'; choose one of vanilla"),
        (dict(scales="2,4"), "--M: invalid scales '2,4': M must be distinct positive integers"),
        (dict(scales="1,1"), "M must be distinct"),
        (dict(overrides=["optim.lr"]), "must look like key=value"),
        (dict(dataset="cub200"), "--dataset cub200 does not fit preset"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs, message):
    with pytest.raises(ConfigError) as info:
        load_config("res32x4_res8x4", **kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_preset_suggests_close_names():
    with pytest.raises(ConfigError, match="did you mean res32x4_res8x4"):
        resolve_preset("res32x4_res8x")


def test_single_scale_methods_refuse_multi_scale():
    with pytest.raises(ConfigError, match="method kd distils the global logits only"):
        load_config("cifar100/kd/res32x4_res8x4", scales="1,2")
    with pytest.raises(ConfigError, match="vanilla training has no scales"):
        load_config("resnet32x4", scales="1,2")


def test_teacher_and_method_must_agree():
    with pytest.raises(ConfigError, match="needs a teacher"):
        load_config("resnet32x4", overrides=["method={name: kd, temperature: 4, ce_weight: 0.1}"])


def test_apply_override_parses_yaml_values():
    raw: dict = {}
    apply_override(raw, "optim.lr_decay_epochs=[1, 2]")
    apply_override(raw, "engine.compile=true")
    assert raw == {"optim": {"lr_decay_epochs": [1, 2]}, "engine": {"compile": True}}


def test_yaml_booleans_spell_amp_settings():
    assert load_config("res32x4_res8x4", overrides=["engine.amp=off"]).engine.amp == "off"
    assert load_config("res32x4_res8x4", overrides=["engine.amp=bf16"]).engine.amp == "bf16"


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """Aliases nested 8 deep stand for 10^8 values: refused on load, before any message could format them."""
    import subprocess
    import sys

    items = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"method:\n  name: sdd_kd_lskd\n  scales: [{', '.join(items)}]\n")
    result = subprocess.run([sys.executable, "-m", "sddkd", "config", "validate", str(bomb)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip  # hung (memory growing) before the fix
    assert result.returncode != 0 and "expand to more than 100,000 values" in result.stdout + result.stderr
    looping = tmp_path / "loop.yaml"
    looping.write_text("method:\n  name: sdd_kd_lskd\n  scales: &s [1, *s]\n")  # an alias that contains itself
    with pytest.raises(ConfigError, match="expand to more than"):
        load_config(str(looping))


def test_a_long_bad_scales_value_is_shown_cut():
    from sddkd.scales import parse_scales

    with pytest.raises(ValueError, match="invalid scales") as error:
        parse_scales([[1] * 1000] * 1000)
    assert len(str(error.value)) < 250
