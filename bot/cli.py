"""The `majicbot` command: run the bot, check the config, manage the database and model files.

Each subcommand loads the configuration first, so a bad file fails the same way everywhere, then imports
only what it needs (the chat side never imports torch; `download` imports modelscope on demand).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bot.config import Config, ConfigError, load_config, masked_dump
from bot.log_setup import configure_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _secrets(config: Config) -> list[str]:
    tokens = [config.discord.token, config.telegram.token, config.telegram.webhook_secret]
    return [token.get_secret_value() for token in tokens if token is not None]


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    configure_logging(args.log_level or config.logging.level, _secrets(config))
    return config


# -- subcommands -----------------------------------------------------------------------------------
def _config_check(args: argparse.Namespace) -> int:
    config = _load(args)
    print(json.dumps(masked_dump(config), indent=2))
    print("config OK", file=sys.stderr)
    return EXIT_OK


def _db_upgrade(args: argparse.Namespace) -> int:
    from storage.database import Database

    config = _load(args)

    async def upgrade() -> None:
        database = Database(config.storage.database_url, busy_timeout_ms=config.storage.busy_timeout_ms)
        try:
            await database.upgrade()
        finally:
            await database.close()

    asyncio.run(upgrade())
    print(f"database at {config.storage.database_url} is up to date")
    return EXIT_OK


def _download(args: argparse.Namespace) -> int:
    from models.download import download_models

    config = _load(args)
    download_models(config.engine.model_dir, on_progress=lambda line: print(line, flush=True))
    return _models_check(args)


def _models_check(args: argparse.Namespace) -> int:
    from models.check import check_models

    config = _load(args)
    report = check_models(config.engine.model_dir)
    print(report.render())
    return EXIT_OK if report.complete else EXIT_FAILURE


def _run(args: argparse.Namespace, *, with_engine: bool, with_chat: bool) -> int:
    from bot.app import Application

    config = _load(args)
    application = Application(config, with_engine=with_engine, with_chat=with_chat)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await application.run(stop)

    asyncio.run(main())
    return EXIT_OK


def _generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from bot.command_parser import ImagineArgs
    from bot.load_bar import LoadBar
    from bot.request_rules import resolve_request
    from engine.generate import generate_one
    from engine.messages import StepProgress

    config = _load(args)
    image_args = ImagineArgs(
        prompt=args.prompt,
        negative_prompt=args.negative,
        seed=args.seed,
        steps=args.steps,
        width=args.width,
        height=args.height,
    )
    request = resolve_request(image_args, config.limits, config.engine)
    output: Path = args.output or Path(f"majicbot-{request.seed}.png")
    print(
        f"seed {request.seed}, {request.steps} steps, {request.width}x{request.height}; loading the model…",
        file=sys.stderr,
    )
    with LoadBar() as load_bar, tqdm(total=request.steps, unit="step", file=sys.stderr) as bar:

        def on_progress(progress: StepProgress) -> None:
            load_bar.close()
            bar.update(progress.step - bar.n)

        png = asyncio.run(
            generate_one(config.engine, request, on_progress, on_load_progress=load_bar.report)
        )
    output.write_bytes(png)
    print(f"wrote {output}")
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: $MAJICBOT_CONFIG, else ./config.toml)",
    )
    common.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)

    parser = argparse.ArgumentParser(
        prog="majicbot", description="Discord and Telegram bot for local FLUX image generation."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="run the engine and the configured chat adapters")
    run.set_defaults(handler=lambda a: _run(a, with_engine=not a.no_engine, with_chat=True))
    run.add_argument(
        "--no-engine",
        action="store_true",
        help="chat adapters only; engine hosts sharing the database run the jobs",
    )
    engine = commands.add_parser(
        "engine", parents=[common], help="run only the GPU engine and its claim loop (an extra GPU host)"
    )
    engine.set_defaults(handler=lambda a: _run(a, with_engine=True, with_chat=False))

    generate = commands.add_parser("generate", parents=[common], help="make one image from the command line")
    generate.add_argument("prompt")
    generate.add_argument("--negative", default="", help="negative prompt")
    generate.add_argument("--seed", type=int, default=None)
    generate.add_argument("--steps", type=int, default=None)
    generate.add_argument("--width", type=int, default=None)
    generate.add_argument("--height", type=int, default=None)
    generate.add_argument("-o", "--output", type=Path, default=None, help="PNG to write")
    generate.set_defaults(handler=_generate)

    download = commands.add_parser(
        "download", parents=[common], help="fetch the model files from ModelScope (resumes)"
    )
    download.set_defaults(handler=_download)

    models = commands.add_parser("models", help="model files")
    models_commands = models.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    models_commands.add_parser(
        "check", parents=[common], help="which model files are present and recognised"
    ).set_defaults(handler=_models_check)

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    config_commands.add_parser(
        "check", parents=[common], help="validate and print the effective config, secrets masked"
    ).set_defaults(handler=_config_check)

    db = commands.add_parser("db", help="database")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    db_commands.add_parser("upgrade", parents=[common], help="apply database migrations").set_defaults(
        handler=_db_upgrade
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `majicbot` console script."""
    from bot.app import ApplicationError
    from bot.errors import UserFacingError
    from bot.frontend import FrontendStartError
    from engine.errors import EngineError

    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as error:
        print(f"majicbot: invalid configuration in {error}", file=sys.stderr)
        return EXIT_CONFIG
    except (UserFacingError, FrontendStartError, ApplicationError, EngineError) as error:
        print(f"majicbot: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
