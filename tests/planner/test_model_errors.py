"""Bad config.json values and unknown models: exit 2 with the field named, never a traceback."""

import json
import subprocess
import sys

import pytest

from ftplan.planner.models import ModelNotFound, not_found_message, resolve_model, similar_models

GOOD = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
}

BAD = [
    ({"num_attention_heads": 0}, "num_attention_heads: 0"),
    ({"hidden_size": -64}, "hidden_size: -64"),
    ({"intermediate_size": 127.5}, "intermediate_size: 127.5"),
    ({"num_key_value_heads": 3}, "num_key_value_heads: 3 does not divide num_attention_heads = 4"),
    ({"vocab_size": None}, "vocab_size: missing"),
    ({"model_type": None}, "model_type: missing"),
]


def _folder(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("change,field", BAD, ids=lambda v: str(v))
def test_bad_config_names_the_field(change, field, tmp_path):
    config = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ModelNotFound, match=field.replace("(", r"\(").replace(".", r"\.")):
        resolve_model(str(_folder(tmp_path, config)))


def test_vision_config_fields_are_named_under_text_config(tmp_path):
    config = {"model_type": "gemma3", "text_config": {**GOOD, "model_type": "gemma3_text", "num_attention_heads": 0}}
    with pytest.raises(ModelNotFound, match=r"text_config\.num_attention_heads: 0"):
        resolve_model(str(_folder(tmp_path, config)))


def test_cli_exits_2_without_a_traceback(tmp_path):
    (tmp_path / "m").mkdir()
    folder = _folder(tmp_path / "m", {**GOOD, "num_attention_heads": 0})
    answers = tmp_path / "answers.toml"
    answers.write_text(f'[model]\nname = "{folder}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "ftplan", "--answers", str(answers), "--json"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "num_attention_heads" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_unknown_hub_id_says_how_to_get_its_config_without_weights():
    message = not_found_message("acme/Frobnicator-7B")
    assert "huggingface-cli download acme/Frobnicator-7B config.json" in message
    assert "folder" in message


def test_did_you_mean_stays_within_family_and_size():
    assert "Qwen/Qwen3-8B" in similar_models("Qwen/Qwen3-8B-Chat")
    assert all("Qwen3-8B" in name for name in similar_models("Qwen/Qwen3-8B-Chat"))
    assert similar_models("Qwen/Qwen3-9B") == []  # no other size, no other generation
    assert "Qwen/Qwen2.5-7B" not in similar_models("Qwen/Qwen3-7B")


def test_gemma2_is_planned_with_a_kernel_its_class_accepts(tmp_path):
    from ftplan.planner import load_answers, make_plan

    answers = tmp_path / "a.toml"
    answers.write_text('[model]\nname = "google/gemma-2-9b"\n[hardware]\ngpu = "A100-80GB"\n')
    plan = make_plan(load_answers(answers))
    assert {m.settings.attention for m in plan.methods.values()} == {"eager"}
    answers.write_text('[model]\nname = "google/gemma-2-9b"\n[training]\nattention = "sdpa"\n')
    done = subprocess.run(
        [sys.executable, "-m", "ftplan", "--answers", str(answers), "--json"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "training.attention" in done.stderr + done.stdout
