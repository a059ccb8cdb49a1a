"""`cortex generate` says, on stderr, when the model that answered is the built-in test model (its
text is noise), and says nothing of the kind for a real one; stdout stays the generated text."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cortex.kernel.sdk.models_cli import generate

ONLY_MLX = '[plugins]\ndisabled = ["ollama", "openai"]\n'
WARNING = "is the built-in model for tests: what it writes is noise"


@pytest.fixture
def cortex_generate(start_kernel, tmp_path, data_dir):
    def start(config: str = ONLY_MLX):
        target, _ = start_kernel(config)
        env = {"CORTEX_CONFIG": str(tmp_path / "cortex-0.toml"), "CORTEX_DATA_DIR": str(data_dir), "CORTEX_TOKEN": None}

        def run(*args: str):
            result = CliRunner(env=env).invoke(generate, [*args, "--target", target])
            assert result.exit_code == 0, result.output
            return result

        return run

    return start


def test_the_tiny_test_model_is_named_on_stderr_and_stdout_stays_the_text(cortex_generate):
    run = cortex_generate()
    once = run("hello", "--max-tokens", "4")
    assert WARNING in once.stderr and "cortex-tiny-llama (mlx)" in once.stderr
    assert "[plugins.mlx] generation_model" in once.stderr and "OpenAI-compatible" in once.stderr
    assert WARNING not in once.stdout and "warning" not in once.stdout
    streamed = run("hello", "--max-tokens", "4", "--stream")
    assert WARNING in streamed.stderr and streamed.stdout == once.stdout
    # --json is for programs: the reply names its model, and nothing is added on stderr (as before)
    as_json = run("hello", "--max-tokens", "4", "--json")
    assert json.loads(as_json.stdout)["model"] == "cortex-tiny-llama" and as_json.stderr == ""
    chunks = run("hello", "--max-tokens", "4", "--stream", "--json")
    assert all(json.loads(line) for line in chunks.stdout.splitlines()) and chunks.stderr == ""


def test_a_real_model_gets_no_warning(cortex_generate, openai_server):
    run = cortex_generate(f"""
        [plugins]
        disabled = ["mlx", "ollama"]
        [plugins.openai]
        base_url = "{openai_server.base_url}"
        model = "fake-gpt"
    """)
    result = run("hello there", "--max-tokens", "5")
    assert result.stdout == "echo: hello there\n" and "[openai fake-gpt:" in result.stderr
    assert "warning" not in result.stderr
    assert "warning" not in run("hello there", "--stream").stderr
