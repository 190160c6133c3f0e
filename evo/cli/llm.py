"""`evo llm serve`: a model server for the LLM operators."""

from __future__ import annotations

import time

import click

from evo.cli.app import cli, console
from evo.errors import EvoError


@cli.group()
def llm() -> None:
    """Model servers for the LLM operators."""


@llm.command()
@click.option("--model", required=True, help="Model path or name for `vllm serve`.")
@click.option("--port", default=8000, show_default=True, help="Port to serve on, on every interface of this machine (vllm's default: other machines reach it, as a cluster's runs need; a firewall decides who may).")
@click.option("--tensor-parallel", default=1, show_default=True, help="GPUs to shard the model over.")
def serve(model: str, port: int, tensor_parallel: int) -> None:
    """Start `vllm serve`, wait until it is healthy, and keep it up until Ctrl-C.

    Then point runs at it: `evo run TASK --run-dir D --llm http://127.0.0.1:PORT`.
    """
    from evo.llm.serve import ManagedServer, vllm_command

    server = ManagedServer(vllm_command(model, port, tensor_parallel), f"http://127.0.0.1:{port}")
    with server:
        console.print(f"vllm serving {model} at http://127.0.0.1:{port} (log: {server.log_path}); Ctrl-C stops it",
                      highlight=False)
        assert server.proc is not None
        while server.proc.poll() is None:
            time.sleep(1.0)
    raise EvoError(f"the model server exited with code {server.proc.returncode}; its log ends:\n{server.log_tail()}")
