"""`cortex generate`, `cortex embed`, `cortex models list`: clients of cortex.models.v1.ModelService
(whichever provider the router picks). A library the plugins of that contract share (mlx, ollama,
openai): each registers these commands from its `cortex_register_commands`, once among them."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, cast

import click
import grpc

from .terminal import KernelClient, config_option, json_option, kernel_client, print_json, print_table, target_option, to_dict

if TYPE_CHECKING:
    from cortex.contracts.models.v1.models_pb2_grpc import ModelServiceStub

GENERATION_TIMEOUT = 300.0
_KEEP = {"\n", "\t"}


def printable(text: str) -> str:
    """Text for a terminal: control characters (ESC, which could drive the terminal, and the like)
    shown escaped, as \\x1b, instead of written raw. Newlines and tabs stay."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in _KEEP else ascii(c)[1:-1] for c in text)


def _for_terminal(text: str) -> str:
    return printable(text) if sys.stdout.isatty() else text


def _models(client: KernelClient) -> ModelServiceStub:
    from cortex.contracts.models.v1 import models_pb2_grpc

    return models_pb2_grpc.ModelServiceStub(client.channel)


@click.command()
@config_option
@target_option
@json_option
@click.argument("prompt")
@click.option("--stream", is_flag=True, help="Print text as it is generated.")
@click.option("--seed", type=int, default=None, help="Sampling seed (same seed, same bytes).")
@click.option("--temperature", type=float, default=None, help="0 (default) is greedy.")
@click.option("--top-p", type=float, default=None)
@click.option("--max-tokens", type=int, default=0, help="0: the provider's default.")
@click.option("--model", default="", help="Model id (default: the provider's).")
@click.option("--stop", "stops", multiple=True, help="Stop before this text (repeatable).")
@click.option("--local-only", is_flag=True, help="Never use a remote provider for this call.")
def generate(
    config: str | None, target: str | None, as_json: bool, prompt: str, stream: bool, seed: int | None,
    temperature: float | None, top_p: float | None, max_tokens: int, model: str, stops: tuple[str, ...], local_only: bool,
) -> None:
    """Generate text for PROMPT."""
    from cortex.contracts.models.v1 import models_pb2 as pb

    request = pb.GenerateRequest(
        prompt=prompt, max_tokens=max_tokens, model=model, stop=list(stops), local_only=local_only
    )
    if seed is not None:
        request.seed = seed
    if temperature is not None:
        request.temperature = temperature
    if top_p is not None:
        request.top_p = top_p
    client = kernel_client(config, target)
    stub = _models(client)
    if not stream:
        reply = client.call(stub.Generate, request, timeout=GENERATION_TIMEOUT)
        if as_json:
            return print_json(to_dict(reply))  # for programs: the reply names its model; no notes on stderr
        click.echo(_for_terminal(reply.text))
        click.echo(f"[{reply.provider} {reply.model}: {reply.usage.completion_tokens} tokens, {reply.finish_reason}]", err=True)
        warn_if_test_model(client, reply.provider, reply.model)
        return
    answered: tuple[str, str] | None = None
    try:
        streamed = pb.GenerateStreamRequest.FromString(request.SerializeToString())  # the same fields
        for message in stub.GenerateStream(streamed, timeout=GENERATION_TIMEOUT, metadata=client.metadata):
            if as_json:
                click.echo(json.dumps(to_dict(message)))
            elif message.done:
                click.echo()
                click.echo(
                    f"[{message.provider} {message.model}: {message.usage.completion_tokens} tokens, {message.finish_reason}]",
                    err=True,
                )
                answered = (message.provider, message.model)
            else:
                sys.stdout.write(_for_terminal(message.delta))
                sys.stdout.flush()
    except grpc.RpcError as exc:
        raise client.error(exc) from None
    if answered:
        warn_if_test_model(client, *answered)


TEST_MODEL_WARNING = (
    "warning: {model} ({provider}) is the built-in model for tests: what it writes is noise, not an answer. "
    "For real text set [plugins.mlx] generation_model to an MLX model folder, or configure Ollama "
    "([plugins.ollama] host) or an OpenAI-compatible endpoint ([plugins.openai] base_url); "
    "see the README's section on models."
)


def warn_if_test_model(client: KernelClient, provider: str, model: str) -> None:
    """On stderr (scripts read stdout), say so when the model that answered is one its provider
    lists as for tests only (MLX's tiny random model: ModelInfo.test_only). Asks that provider
    (pinned by x-cortex-provider), briefly; says nothing when it cannot tell."""
    from cortex.contracts.models.v1 import models_pb2 as pb

    if not provider or not model:
        return
    try:
        listed = _models(client).ListModels(
            pb.ListModelsRequest(), timeout=10, metadata=(*client.metadata, ("x-cortex-provider", provider))
        )
    except grpc.RpcError:
        return
    if any(m.test_only and m.id == model and m.provider in ("", provider) for m in listed.models):
        click.echo(TEST_MODEL_WARNING.format(model=model, provider=provider), err=True)


@click.command()
@config_option
@target_option
@json_option
@click.argument("texts", nargs=-1, required=True)
@click.option("--model", default="", help="Model id (default: the provider's).")
@click.option("--local-only", is_flag=True)
def embed(config: str | None, target: str | None, as_json: bool, texts: tuple[str, ...], model: str, local_only: bool) -> None:
    """Embed TEXTS; with --json prints {"model", "dimension", "vectors"}."""
    from cortex.contracts.models.v1 import models_pb2 as pb

    client = kernel_client(config, target)
    reply = client.call(_models(client).Embed, pb.EmbedRequest(texts=list(texts), model=model, local_only=local_only))
    vectors = [list(v.values) for v in reply.vectors]
    if as_json:
        return print_json({"model": reply.model, "dimension": reply.dimension, "vectors": vectors, "provider": reply.provider})
    for text, vector in zip(texts, vectors, strict=True):
        shown = ", ".join(f"{x:.4f}" for x in vector[:4])
        click.echo(f"{text[:40]!r}: [{shown}, ...] ({reply.dimension} dims, {reply.model} via {reply.provider})")


@click.group()
def models() -> None:
    """Models of every ModelService provider."""


@models.command("list")
@config_option
@target_option
@json_option
def models_list(config: str | None, target: str | None, as_json: bool) -> None:
    """List each provider's models (asking each provider in turn)."""
    from cortex.contracts.kernel.v1 import kernel_pb2
    from cortex.contracts.models.v1 import models_pb2 as pb

    client = kernel_client(config, target)
    contracts = client.call(client.kernel().ListContracts, kernel_pb2.ListContractsRequest())
    providers = [p.name for c in contracts.contracts if c.service == "cortex.models.v1.ModelService" for p in c.providers]
    rows: list[dict[str, Any]] = []
    problems: dict[str, str] = {}
    for name in providers:
        try:
            reply = _models(client).ListModels(
                pb.ListModelsRequest(), timeout=10, metadata=(*client.metadata, ("x-cortex-provider", name))
            )
        except grpc.RpcError as exc:
            problems[name] = f"{exc.code().name}: {exc.details()}"
            continue
        rows += [to_dict(m) for m in reply.models]
    if as_json:
        return print_json({"models": rows, "unavailable": problems})
    kinds = {"KIND_GENERATION": "generation", "KIND_EMBEDDING": "embedding"}
    print_table(
        [
            [r["provider"], r["id"], kinds.get(r["kind"], "?"), "local" if r["local"] else "remote", "yes" if r["default"] else "",
             "for tests only: its text is noise" if r.get("test_only") else ""]
            for r in rows
        ],
        ["PROVIDER", "MODEL", "KIND", "WHERE", "DEFAULT", "NOTE"],
    )
    for name, problem in problems.items():
        click.echo(f"{name}: unavailable ({problem})", err=True)


def register(cli: click.Group) -> click.Group:
    """Add the commands unless another model plugin did; returns the `models` group (for more)."""
    for command in (generate, embed, models):
        if command.name not in cli.commands:
            cli.add_command(command)
    return cast(click.Group, cli.commands["models"])  # ours, or the same group another model plugin added
