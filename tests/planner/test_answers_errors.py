"""Bad answers files: one message naming every problem, its field and line; exit code 2."""

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftplan.cli import main
from ftplan.planner import AnswersError, load_answers, read_answers_text

VALID = """\
[objective]
kind = "instruction"
variants = 2

[model]
name = "meta-llama/Llama-3.1-8B"

[data]
examples = 50000
avg_tokens = 400
max_seq_len = 2048

[hardware]
gpu = "A100-80GB"
gpus_per_node = 1

[budget]
usd = 500

[training]
lora_r = 16
lora_target_modules = ["q_proj", "v_proj"]
"""


def problems(text: str) -> list:
    with pytest.raises(AnswersError) as info:
        read_answers_text(text, "answers.toml")
    return info.value.problems


def test_valid_file_parses():
    answers = read_answers_text(VALID)
    assert answers.training.lora_r == 16
    assert answers.objective.variants == 2


def test_only_model_name_is_required():
    answers = read_answers_text('[model]\nname = "Qwen/Qwen2.5-0.5B"\n')
    assert answers.model.name == "Qwen/Qwen2.5-0.5B"
    assert problems("[data]\nexamples = 5\n")[0].field == "model"


def test_every_problem_is_reported_at_once_with_fields_and_lines():
    text = VALID.replace("lora_r = 16", "lora_r = -3").replace("gpus_per_node = 1", 'gpus_per_node = "two"')
    found = {p.field: p for p in problems(text)}
    assert set(found) == {"training.lora_r", "hardware.gpus_per_node"}
    assert found["training.lora_r"].line == text.splitlines().index("lora_r = -3") + 1
    assert found["hardware.gpus_per_node"].line == text.splitlines().index('gpus_per_node = "two"') + 1


def test_unknown_key_suggests_the_right_one():
    text = VALID.replace("lora_r = 16", "lora_rank = 16")
    (p,) = problems(text)
    assert p.field == "training.lora_rank"
    assert "did you mean training.lora_r?" in p.message
    assert p.line == text.splitlines().index("lora_rank = 16") + 1


def test_unknown_section_suggests_the_right_one():
    (p,) = problems(VALID.replace("[budget]", "[budgte]"))
    assert p.field == "budgte" and "did you mean budget?" in p.message


def test_unknown_model_lists_close_catalog_names():
    (p,) = problems(VALID.replace("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8b-instruct-x"))
    assert p.field == "model.name"
    assert "did you mean" in p.message.lower() and "Llama-3.1-8B" in p.message


def test_unknown_gpu_and_bad_target_modules_are_both_reported():
    text = VALID.replace('gpu = "A100-80GB"', 'gpu = "A100-80"').replace('["q_proj", "v_proj"]', '["q_proj", "qkv"]')
    fields = {p.field: p.message for p in problems(text)}
    assert "A100-80GB" in fields["hardware.gpu"]
    assert "qkv" in fields["training.lora_target_modules"]


def test_toml_syntax_error_names_the_line():
    (p,) = problems(VALID.replace("usd = 500", "usd = = 500"))
    assert p.line == VALID.splitlines().index("usd = 500") + 1
    assert "TOML" in p.message


@pytest.mark.parametrize(
    "content,expected",
    [(b"\xff\xfe\x00garbage\x00", "not a UTF-8"), (b"\x00\x01\x02", "NUL")],
)
def test_binary_garbage_is_a_clear_error(tmp_path, content, expected):
    path = tmp_path / "answers.toml"
    path.write_bytes(content)
    with pytest.raises(AnswersError) as info:
        load_answers(path)
    assert expected in info.value.render()


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(AnswersError, match="no such file"):
        load_answers(tmp_path / "nope.toml")
    with pytest.raises(AnswersError, match="is a folder"):
        load_answers(tmp_path)


def test_cli_exit_code_2_and_one_message_on_stderr(tmp_path, capsys):
    path = tmp_path / "a.toml"
    path.write_text(VALID.replace("lora_r = 16", "lora_r = 0").replace("[budget]", "[budgte]"))
    assert main(["--answers", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "2 problems" in err and "training.lora_r" in err and "budgte" in err
    assert "Traceback" not in err


def test_cli_subprocess_never_prints_a_traceback(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text("[model\nname = 3")
    run = subprocess.run([sys.executable, "-m", "ftplan", "--answers", str(path)], capture_output=True, text=True)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and str(path) in run.stderr


LINES = VALID.splitlines()
MUTATIONS = st.sampled_from(["delete", "duplicate", "garble", "retype", "insert"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(MUTATIONS, st.integers(0, len(LINES) - 1), st.text(max_size=12)), min_size=1, max_size=4))
def test_mutated_files_never_raise_anything_but_answers_error(ops):
    lines = list(LINES)
    for op, index, text in ops:
        index %= len(lines) or 1
        if not lines:
            lines.append(text)
        elif op == "delete":
            lines.pop(index)
        elif op == "duplicate":
            lines.insert(index, lines[index])
        elif op == "garble":
            lines[index] = lines[index][: len(lines[index]) // 2] + text
        elif op == "retype":
            key = lines[index].split("=")[0]
            lines[index] = f"{key}= {text!r}" if "=" in lines[index] else text
        else:
            lines.insert(index, text)
    try:
        read_answers_text("\n".join(lines), "mutated.toml")
    except AnswersError as exc:
        message = exc.render()
        assert message.startswith("mutated.toml: ")
        assert exc.problems


def test_schema_problems_and_unknown_names_come_in_one_round():
    """Issue 14: the unknown GPU used to be reported only after the schema errors were fixed."""
    text = (
        VALID.replace('gpu = "A100-80GB"', 'gpu = "RTX-5090"')
        .replace('kind = "instruction"', 'kind = "chat"')
        .replace('name = "meta-llama/Llama-3.1-8B"', 'name = "meta-llama/Llama-3.1-8Bx"')
    )
    found = {p.field: p for p in problems(text + 'method = "qlorra"\n')}
    assert set(found) == {"objective.kind", "training.method", "hardware.gpu", "model.name"}
    assert (
        "RTX-4090" in found["hardware.gpu"].message
        and found["hardware.gpu"].line == VALID.splitlines().index('gpu = "A100-80GB"') + 1
    )


def test_a_section_given_as_a_value_names_the_toml_shape_not_a_class():
    found = problems('model = "Qwen/Qwen2.5-0.5B"\n')
    assert found[0].field == "model" and "table" in found[0].message
    assert "ModelChoice" not in found[0].render() and "dictionary" not in found[0].render()
