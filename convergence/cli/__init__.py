"""The `convergence` command: serve the API, run the demo."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Annotated

import typer
from rich.console import Console

from convergence.cli.keys import keys_app
from convergence.cli.output import error_line, fail
from convergence.cli.runs import runs_app
from convergence.cli.schedules import schedules_app
from common.errors import ConfigurationError, ConvergenceError
from convergence.cli.stage import stage_command
from convergence.cli.templates import templates_app

app = typer.Typer(help="Convergence: per-tenant cloud cost data.", no_args_is_help=True, add_completion=False)
console = Console()


def _prepare_runtime(**overrides: object):
    """Settings (with a root key in embedded mode, and any `overrides`) and the runtime built from them."""
    from common.crypto.root_key import ensure_root_key
    from common.wiring import build_runtime, set_runtime
    from common.settings import get_settings

    settings, generated = ensure_root_key(get_settings())
    if overrides:
        settings = settings.model_copy(update=overrides)
    runtime = build_runtime(settings)
    set_runtime(runtime)
    if generated:
        console.print(
            f"Root key (shown once; kept in {settings.root_key_path}): [bold]{generated}[/bold]", soft_wrap=True
        )
    return runtime


def _interrupt(*_: object) -> None:
    """SIGTERM stops `serve` the way Ctrl-C does."""
    raise KeyboardInterrupt


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).", min=0, max=65535)] = 8080,
) -> None:
    """Serve every HTTP route from one process (embedded mode by default)."""
    from werkzeug.serving import make_server

    from common.wiring import wsgi_app
    from common.wiring import reset_runtime
    from convergence.local_dispatcher import start_local_dispatcher

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        runtime = _prepare_runtime()
        server = make_server(host, port, wsgi_app("both"), threaded=True)
    except ConvergenceError as exc:
        fail(exc)
    except OSError as exc:
        error_line(f"cannot listen on {host}:{port}: {exc.strerror}")
        raise typer.Exit(2) from None
    settings = runtime.settings
    console.print(
        f"Convergence serving on http://{host}:{server.port} "
        f"(warehouse={settings.convergence_warehouse}, bus={settings.convergence_bus}, "
        f"keyring={settings.convergence_keyring}, home={settings.convergence_home})",
        soft_wrap=True,
    )
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, _interrupt)
    dispatcher = start_local_dispatcher(runtime)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        server.server_close()
        if dispatcher is not None:
            dispatcher.stop()
        reset_runtime()


@app.command()
def demo(
    days: Annotated[
        int,
        typer.Option(
            help="Recent days of Google Cloud, OpenAI and Anthropic costs (acme_demo).", min=1, max=31
        ),
    ] = 3,
) -> None:
    """Bootstrap, onboard two tenants, load every provider's sample data, run their pipelines, print costs."""
    from convergence.demo.provider_apis import ProviderApiServer
    from convergence.demo.run import run_demo
    from common.wiring import reset_runtime

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # OpenAI and Anthropic are answered by the local replay server: the runtime's settings point at it.
    with ProviderApiServer() as replay:
        try:
            runtime = _prepare_runtime(openai_api_base=replay.base_url, anthropic_api_base=replay.base_url)
            code = run_demo(runtime, console, replay, days=days)
        except ConvergenceError as exc:
            fail(exc)
        finally:
            reset_runtime()
    raise typer.Exit(code)


app.add_typer(keys_app, name="keys")
app.add_typer(runs_app, name="runs")
app.add_typer(schedules_app, name="schedules")
app.add_typer(templates_app, name="templates")
app.command("stage")(stage_command)

local_app = typer.Typer(help="The deployed topology on this machine, with the official emulators.", no_args_is_help=True)
app.add_typer(local_app, name="local")


@local_app.command("up")
def local_up(
    detach: Annotated[bool, typer.Option("--detach", help="Leave the stack running; stop it with `local down`.")] = False,
) -> None:
    """Start the Pub/Sub emulator, bqemulator and the functions, wired by push subscriptions."""
    import time

    from common.crypto.root_key import ensure_root_key
    from convergence.local_stack import LocalStack, env_lines
    from common.settings import get_settings

    settings, generated = ensure_root_key(get_settings())
    root_key = settings.ca_root_api_key.get_secret_value()  # type: ignore[union-attr]
    stack = LocalStack(settings, root_key)
    try:
        stack.start()
    except ConvergenceError as exc:
        fail(exc)
    for name in ("onboard", "trigger"):
        print(f"{name}: {stack.endpoints[name]}")
    for name in ("trigger_schedules", "step_execute", "pubsub-emulator", "bigquery-emulator"):
        print(f"{name}: {stack.endpoints[name]}")
    print("# environment for clients of this stack:")
    for line in env_lines(stack):
        print(line)
    if generated:
        print(f"# root key generated and kept in {settings.root_key_path}")
    print(f"# logs: {stack.folder / 'logs'}")
    sys.stdout.flush()
    if detach:
        print("# running in the background: `convergence local down` stops it")
        return
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping the local stack")
    finally:
        stack.stop()


@local_app.command("down")
def local_down() -> None:
    """Stop a stack started with `local up --detach`."""
    from convergence.local_stack import stop_detached
    from common.settings import get_settings

    stopped = stop_detached(get_settings().convergence_home)
    print(f"stopped {stopped} processes" if stopped else "no local stack is running from this CONVERGENCE_HOME")


def main() -> None:
    try:
        app()
    except ConfigurationError as exc:
        error_line(exc.message)
        sys.exit(2)


if __name__ == "__main__":
    main()
