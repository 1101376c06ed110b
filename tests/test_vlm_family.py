"""The model-family registry (`vlm/family.py`): a checkpoint's family from `vlm.family` or its config.json's
model_type, the errors for an unknown or contradicting one, and `doctor`'s VLM line, on a tiny LLaVA."""

import json
import shutil

import pytest

from sensei_jax import config as config_lib
from sensei_jax.vlm import family
from sensei_jax.vlm.checkpoint import check_folder
from sensei_jax.vlm.tiny import write_tiny_checkpoint


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_llava"), ["first or second"])


def _with_model_type(source, target, model_type):
    shutil.copytree(source, target)
    data = json.loads((target / "config.json").read_text())
    data["model_type"] = model_type
    (target / "config.json").write_text(json.dumps(data))
    return target


def test_the_family_follows_the_model_type_or_the_setting(llava_dir):
    assert family.resolve(llava_dir).name == "llava"
    assert family.resolve(llava_dir, "llava").name == "llava"
    assert family.get("llava").config_class().__name__ == "LlavaConfig"
    assert check_folder(llava_dir).image_seq_length == 16  # read by the family's config class


def test_an_unknown_model_type_or_family_is_named_with_its_file(llava_dir, tmp_path):
    other = _with_model_type(llava_dir, tmp_path / "gemma", "gemma3")
    with pytest.raises(ValueError, match=rf"{other}/config.json: model_type is 'gemma3'; supported: 'llava' "
                                         r"\(LLaVA-1.5\), 'qwen3_vl' \(Qwen3-VL\)"):
        family.resolve(other)
    with pytest.raises(ValueError, match=r"vlm.family: unknown model family 'gemma'; known: llava, qwen3_vl"):
        family.resolve(llava_dir, "gemma")
    with pytest.raises(config_lib.ConfigError, match="vlm.family"):
        config_lib.load(None, ["--vlm.family", "gemma"])
    missing = tmp_path / "empty"
    missing.mkdir()
    with pytest.raises(FileNotFoundError, match=rf"{missing}/config.json is missing"):
        family.resolve(missing)


def test_a_family_setting_that_contradicts_the_checkpoint_is_refused(llava_dir, tmp_path):
    other = _with_model_type(llava_dir, tmp_path / "other", "qwen3_vl_moe")
    with pytest.raises(ValueError, match=rf"vlm.family is 'llava' but {other}/config.json says model_type "
                                         r"'qwen3_vl_moe' \(llava reads 'llava'\)"):
        family.resolve(other, "llava")


def test_doctor_names_the_family_and_the_folders_problem(llava_dir, tmp_path):
    from sensei_jax.pipeline.doctor import _vlm_line, vlm_facts

    facts = vlm_facts(config_lib.load(None, ["--vlm.path", str(llava_dir)]))
    assert facts["family"] == "llava" and facts["problem"] is None
    assert _vlm_line(facts) == f"vlm       {llava_dir}: LLaVA-1.5 (family llava), every file loading needs is there"
    broken = tmp_path / "broken"
    shutil.copytree(llava_dir, broken)
    (broken / "tokenizer.json").unlink()
    facts = vlm_facts(config_lib.load(None, ["--vlm.path", str(broken)]))
    assert facts["family"] == "llava" and f"{broken}/tokenizer.json is missing" in facts["problem"]
    assert _vlm_line(vlm_facts(config_lib.load(None, []))).startswith("vlm       no checkpoint set (vlm.path)")
